"""The benchmark's two controls as gates on the H1 verdict (rules fixed before any result).

At each control cell (the generator's named cells, ``plans``) three runs train:
``fedavg_lora``, ``fedavg_lora_ft`` (FedAvg-LoRA + local fine-tuning) and ``med_duallora``.
Every difference is paired within replicates and inferred exactly as the primary endpoint
(``inference.paired_difference``: a t over cohort means with two or more cohort seeds, else the
two-level bootstrap conditional on the one cohort), on pooled balanced accuracy (BA), 95%.

- **Negative control** (``negative``: no vendor or centre difference, so nothing to
  personalize). Gate: Med-DualLoRA - FedAvg-LoRA. It **passes when the 95% interval is defined
  and its lower end is at most 0** (it includes 0 or lies below it: no significant gain); it
  fails when the lower end is above 0 (a gain where the generator put none: a bug, a leak or
  an unfair protocol). FedAvg-LoRA + fine-tuning - FedAvg-LoRA is reported beside it, not gated.
- **Positive control** (``positive``: two vendor annotation camps, a shift a local model must
  be able to exploit). Gate: FedAvg-LoRA + fine-tuning - FedAvg-LoRA, the simplest
  personalization. It **passes when the 95% interval is defined and its lower end is above
  0**; otherwise the benchmark could not see personalization where it certainly helps.
  Med-DualLoRA - FedAvg-LoRA is reported beside it, not gated.

**Verdict on H1** (``verdict``): withheld when either control failed or could not be computed
(the plan lacks it, or its runs are missing); otherwise Med-DualLoRA better (primary interval
above 0), FedAvg-LoRA better (below 0), or not resolvable at this size.
"""

from __future__ import annotations

import math
from typing import Any

from duallora.benchmark.plans import ShiftCell
from duallora.results import inference

GATES = {"negative": ("med_duallora", "fedavg_lora"),
         "positive": ("fedavg_lora_ft", "fedavg_lora")}
BESIDE = {"negative": ("fedavg_lora_ft", "fedavg_lora"),
          "positive": ("med_duallora", "fedavg_lora")}
RULES = {
    "negative": "passes when the 95% interval of med_duallora - fedavg_lora (pooled balanced "
                "accuracy) is defined and its lower end is <= 0 (no significant gain where "
                "there is nothing to personalize)",
    "positive": "passes when the 95% interval of fedavg_lora_ft - fedavg_lora (pooled balanced "
                "accuracy) is defined and its lower end is > 0 (personalization is seen where "
                "it must help)",
}
FAILED = {
    "negative": "the negative control failed: the benchmark finds gains where none exist",
    "positive": "the positive control failed: the benchmark could not see personalization",
}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _difference(reps: list[inference.Replicate], a: str, b: str, n_boot: int
                ) -> dict[str, Any]:
    result = inference.paired_difference(reps, a, b, "balanced_accuracy", n_boot=n_boot)
    return {"comparison": f"{a} - {b}", "metric": "balanced_accuracy",
            "estimate": result.diff, "interval": [result.low, result.high],
            "level": result.level, "method": result.method, "p": result.p, "mde": result.mde,
            "n_replicates": result.n_replicates, "n_cohorts": result.n_cohorts,
            "text": inference.describe(result, metric="balanced_accuracy")}


def passes(kind: str, low: float | None) -> bool:
    """The gate's rule (module docstring) on the lower end of the 95% interval."""
    if not _finite(low):
        return False
    return bool(low <= 0) if kind == "negative" else bool(low > 0)


def control_entry(kind: str, cell: ShiftCell, reps: list[inference.Replicate],
                  n_boot: int) -> dict[str, Any]:
    """``passed`` with the gate's estimate, interval, method and the cell; or ``passed`` None
    and the reason when the control could not be computed."""
    entry: dict[str, Any] = {"cell": cell.spec, "cell_name": cell.name, "rule": RULES[kind]}
    a, b = GATES[kind]
    present = [arm for arm in reps[0].probs if all(arm in rep.probs for rep in reps)] \
        if reps else []
    if a not in present or b not in present:
        return {**entry, "passed": None, "reason": f"no predictions of {a} and {b} at this "
                "cell (runs missing)"}
    gate = _difference(reps, a, b, n_boot)
    entry.update(gate)
    entry["passed"] = passes(kind, gate["interval"][0])
    c, d = BESIDE[kind]
    if c in present and d in present:
        entry["beside"] = _difference(reps, c, d, n_boot)
    return entry


def verdict(primary: dict[str, Any] | None, controls: dict[str, Any]) -> dict[str, Any]:
    """The H1 verdict field: withheld unless both controls passed (module docstring)."""
    reasons = []
    for kind in ("positive", "negative"):
        entry = controls.get(kind)
        if entry is None:
            reasons.append(f"the plan has no {kind} control")
        elif entry.get("passed") is None:
            reasons.append(f"the {kind} control could not be computed ({entry.get('reason')})")
        elif not entry["passed"]:
            reasons.append(FAILED[kind])
    if reasons:
        return {"status": "withheld", "gated": True,
                "text": "No verdict on H1: " + "; ".join(reasons) + "."}
    ba = (primary or {}).get("balanced_accuracy") or {}
    low, high = ba.get("low"), ba.get("high")
    if not (_finite(low) and _finite(high)):
        return {"status": "withheld", "gated": True,
                "text": "No verdict on H1: the primary comparison could not be computed."}
    if low > 0:
        status, text = "med_duallora_better", "Med-DualLoRA beats FedAvg-LoRA"
    elif high < 0:
        status, text = "fedavg_lora_better", "FedAvg-LoRA beats Med-DualLoRA"
    else:
        status, text = "not_resolvable", ("no difference resolvable at this size (which is not "
                                           "evidence of no difference)")
    return {"status": status, "gated": True,
            "text": f"Both controls passed. H1 (pooled balanced accuracy, 95% interval): "
                    f"{text}."}
