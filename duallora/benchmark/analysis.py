"""From a plan's finished runs to every number of the benchmark report (a JSON-ready dict).

The design unit is a *replicate*: one (cohort seed, training seed) pair at one shift cell.
Within a replicate every arm predicts the same test subjects, so comparisons are paired; the
intervals come from ``duallora.results.inference`` (two-level bootstrap: replicates, then
subjects within vendor x label).

Families and corrections (declared in ``plans``):
- H1 primary: Med-DualLoRA (personalized) - FedAvg-LoRA, pooled balanced accuracy, at the
  primary cell: one test, no correction. AUC is reported beside it.
- H1 secondary: Med-DualLoRA against every other arm at the primary cell: Holm-adjusted.
- H1 dose-response: the primary difference at every shift cell; the label=0 cell is the
  negative control (a significant positive gain there is flagged as a bug or noise).
- Per-vendor differences: exploratory, unadjusted, labelled so.
- H2: TOST of two blocks vs all blocks at the plan's margin, and the share of the
  (all blocks - head-only probe) gap that two blocks recover.
- H3: bytes per round and in total from each run's wire log (``metrics.csv`` cost rows).
- Controls (``controls``): the negative and positive control cells gate the H1 verdict.
- Every arm's test sensitivity and specificity at the threshold that gives 90% specificity on
  its own validation predictions (``duallora.results.thresholds``).
- Leave one vendor out (``lovo``): the global model on a vendor it never trained on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from duallora.benchmark import controls, lovo
from duallora.benchmark.cross_site import cross_site_matrix, subjects_per_site
from duallora.benchmark.plans import ARMS, H2_ARMS, PRIMARY, Plan, ShiftCell
from duallora.benchmark.runs import TrainedRun, run_cost
from duallora.benchmark.validation import read_validation
from duallora.federated.prepare import UNSEEN_SITE
from duallora.results import inference, run_reader, thresholds

METRICS = ("balanced_accuracy", "auc", "sensitivity", "specificity", "brier", "ece")
VENDOR_METRICS = ("balanced_accuracy", "auc")
REFERENCES = ("chance", "head_only_probe", "raw_pixel_probe")
AT_SPEC90 = ("sensitivity", "specificity")  # read at the validation threshold (thresholds.py)


def _plain(value: Any) -> Any:
    """Dataclasses and numpy scalars as JSON-ready values."""
    if is_dataclass(value):  # public fields only (bootstrap draws are repr=False)
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if f.repr}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_predictions(folder: Path) -> pd.DataFrame:
    frame = run_reader.read_predictions(folder, missing_ok=False)
    frame["subject_id"] = frame["subject_id"].astype(str)
    return frame


def arm_probs(predictions: pd.DataFrame, split: str, where: str = "seen"
              ) -> pd.DataFrame | None:
    """``subject_id, vendor, label, prob`` of one arm: the seen-centre test subjects (each
    predicted by its own vendor's model), or the unseen centre (``where="unseen"``)."""
    if where == "unseen":
        part = predictions[predictions["client"] == UNSEEN_SITE]
        part = part[part["split"] == ("holdout" if split == "test_global" else split)]
    else:
        part = predictions[(predictions["split"] == split)
                           & (predictions["client"] != UNSEEN_SITE)]
    if part.empty:
        return None
    part = part.rename(columns={"client": "vendor"})
    return part[["subject_id", "vendor", "label", "prob"]].sort_values("subject_id")


def validation_threshold(validation: pd.DataFrame | None, split: str) -> float | None:
    """The arm's threshold at 90% validation specificity from its run's validation predictions
    (``val`` for a personalized arm, ``val_global`` for a global one), pooled over sites."""
    if validation is None:
        return None
    part = validation[validation["split"] == ("val" if split == "test" else "val_global")]
    if part.empty or not (part["label"] == 0).any():
        return None
    return thresholds.threshold_at_specificity(part["label"].to_numpy(),
                                               part["prob"].to_numpy())


def replicates(runs: list[TrainedRun], cell: ShiftCell, arms: list[str],
               where: str = "seen", extra: dict[tuple[int, int], dict[str, np.ndarray]]
               | None = None, cuts: dict[str, dict[str, float]] | None = None
               ) -> list[inference.Replicate]:
    """One ``Replicate`` per (cohort seed, train seed) at ``cell`` holding every arm that has
    predictions there (``extra``: reference arms computed outside the runs, by replicate).

    Each arm whose run has validation predictions also gets ``<arm>@val_spec90``: its test
    predictions made 0/1 at its validation threshold (``thresholds``); ``cuts`` collects the
    thresholds, ``{arm: {"<cohort seed>/<train seed>": threshold}}``."""
    by_key: dict[tuple[int, int], dict[str, pd.DataFrame]] = defaultdict(dict)
    for run in runs:
        if run.cohort.cell != cell:
            continue
        predictions = read_predictions(run.folder)
        validation = read_validation(run.folder) if where == "seen" else None
        for arm in arms:
            spec = ARMS[arm]
            if spec.run == run.spec.name:
                probs = arm_probs(predictions, spec.split, where)
                if probs is None:
                    continue
                by_key[run.cohort.seed, run.train_seed][arm] = probs
                cut = validation_threshold(validation, spec.split)
                if cut is not None:
                    at = probs.assign(prob=thresholds.binarize(probs["prob"].to_numpy(), cut))
                    by_key[run.cohort.seed, run.train_seed][arm + thresholds.SUFFIX] = at
                    if cuts is not None:
                        cuts.setdefault(arm, {})[f"{run.cohort.seed}/{run.train_seed}"] = cut
    out = []
    for (cohort_seed, train_seed), frames in sorted(by_key.items()):
        base = next(iter(frames.values()))
        for arm, frame in frames.items():
            if frame["subject_id"].tolist() != base["subject_id"].tolist():
                raise ValueError(f"arm {arm}: other test subjects than the rest of its "
                                 f"replicate (cohort seed {cohort_seed}, seed {train_seed})")
        probs = {arm: frame["prob"].to_numpy(dtype=np.float64) for arm, frame in frames.items()}
        probs.update((extra or {}).get((cohort_seed, train_seed), {}))
        strata = (base["vendor"].astype(str) + "|" + base["label"].astype(str)).to_numpy()
        out.append(inference.Replicate(base["label"].to_numpy(dtype=np.int64), strata, probs,
                                       cohort_seed, train_seed))
    return out


def _restrict(reps: list[inference.Replicate], vendor: str) -> list[inference.Replicate]:
    out = []
    for rep in reps:
        keep = np.array([s.split("|")[0] == vendor for s in rep.strata])
        out.append(inference.Replicate(rep.labels[keep], rep.strata[keep],
                                       {a: p[keep] for a, p in rep.probs.items()},
                                       rep.cohort_seed, rep.train_seed))
    return out


def _arms_in(reps: list[inference.Replicate], derived: bool = False) -> list[str]:
    """Arms with predictions in every replicate (``derived``: also the ``@val_spec90`` ones)."""
    if not reps:
        return []
    return [arm for arm in reps[0].probs if all(arm in rep.probs for rep in reps)
            and (derived or thresholds.SUFFIX not in arm)]


def arm_table(reps: list[inference.Replicate], n_boot: int, seed: int = 0,
              cuts: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, Any]]:
    """Every arm's every metric with its interval, seed spread and sampling error; with
    validation predictions also its test sensitivity and specificity at the threshold giving
    90% validation specificity (``<metric>_at_val_spec90``) and those thresholds."""
    every = _arms_in(reps, derived=True)
    table = {}
    for arm in _arms_in(reps):
        entry = {metric: _plain(inference.estimate(reps, arm, metric, n_boot=n_boot, seed=seed))
                 for metric in METRICS}
        derived = arm + thresholds.SUFFIX
        if derived in every:
            for metric in AT_SPEC90:
                entry[f"{metric}_at_val_spec90"] = {
                    **_plain(inference.estimate(reps, derived, metric, n_boot=n_boot,
                                                seed=seed)), "arm": arm}
            entry["val_threshold_spec90"] = (cuts or {}).get(arm, {})
        table[arm] = entry
    return table


def vendor_table(reps: list[inference.Replicate], n_boot: int, seed: int = 0
                 ) -> dict[str, dict[str, Any]]:
    """Every arm's balanced accuracy and AUC on each vendor's own test subjects, and its worst
    vendor by balanced accuracy: a personalized method can win on average and still fail a site."""
    vendors = sorted({stratum.split("|")[0] for stratum in reps[0].strata}) if reps else []
    restricted = {vendor: _restrict(reps, vendor) for vendor in vendors}
    table: dict[str, dict[str, Any]] = {}
    for arm in _arms_in(reps):
        per_vendor = {vendor: {metric: _plain(inference.estimate(
                          part, arm, metric, n_boot=n_boot, seed=seed))
                          for metric in VENDOR_METRICS}
                      for vendor, part in restricted.items()}
        finite = {vendor: values["balanced_accuracy"]["value"]
                  for vendor, values in per_vendor.items()
                  if values["balanced_accuracy"]["value"] is not None}
        worst = min(finite, key=finite.get) if finite else None
        table[arm] = {"per_vendor": per_vendor,
                      "worst_vendor": ({"vendor": worst,
                                        **per_vendor[worst]["balanced_accuracy"]}
                                       if worst else None)}
    return table


def compare(reps: list[inference.Replicate], a: str, b: str, n_boot: int,
            metrics: tuple[str, ...] = ("balanced_accuracy", "auc"), seed: int = 0
            ) -> dict[str, Any]:
    out = {}
    for metric in metrics:
        result = inference.paired_difference(reps, a, b, metric, n_boot=n_boot, seed=seed)
        out[metric] = {**_plain(result), "text": inference.describe(result, metric=metric)}
    return out


def analyse(plan: Plan, runs: list[TrainedRun], references: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Every hypothesis of the plan from its runs (see the module docstring)."""
    references = references or {}
    extra = references.get("probs", {})
    primary = plan.primary_cell
    arms = list(ARMS)
    result: dict[str, Any] = {"cells": {}}
    by_cell: dict[str, list[inference.Replicate]] = {}
    for cell in plan.cells():
        cuts: dict[str, dict[str, float]] = {}
        reps = replicates(runs, cell, arms, extra=extra.get(cell.key), cuts=cuts)
        if not reps:
            continue
        by_cell[cell.key] = reps
        entry: dict[str, Any] = {"shift": cell.spec, "name": cell.name,
                                 "n_replicates": len(reps),
                                 "n_test_subjects": int(len(reps[0].labels)),
                                 "arms": arm_table(reps, plan.n_boot, cuts=cuts)}
        if all(arm in _arms_in(reps) for arm in PRIMARY):
            entry["primary"] = compare(reps, *PRIMARY, plan.n_boot)
        if cell == primary:
            entry["vendors"] = vendor_table(reps, plan.n_boot)
        result["cells"][cell.key] = entry
    reps = by_cell.get(primary.key, [])
    result["controls"] = {kind: controls.control_entry(kind, cell, by_cell.get(cell.key, []),
                                                       plan.n_boot)
                          for kind, cell in plan.controls().items()}
    result["h1"] = h1_section(plan, result["cells"], reps, runs)
    result["h1"]["verdict"] = controls.verdict(result["h1"].get("primary"),
                                               result["controls"])
    result["lovo"] = lovo_section(plan, runs)
    result["h2"] = h2_section(plan, reps)
    result["h3"] = h3_section(plan, runs, result["cells"].get(primary.key, {}))
    result["cross_site"] = cross_site_matrix(runs, primary)
    result["cross_site_subjects"] = subjects_per_site(runs, primary)
    return _plain(result)


def _headroom(runs: list[TrainedRun], cell: ShiftCell) -> float:
    seeds = {run.cohort.seed: run.cohort for run in runs if run.cohort.cell == cell}
    values = [cohort.headroom()["mean_headroom"] for cohort in seeds.values()]
    return float(np.mean(values)) if values else math.nan


def h1_section(plan: Plan, cells: dict[str, Any], reps: list[inference.Replicate],
               runs: list[TrainedRun]) -> dict[str, Any]:
    primary = cells.get(plan.primary_cell.key, {}).get("primary")
    cell = cells.get(plan.primary_cell.key, {})
    section: dict[str, Any] = {"endpoint": "pooled balanced accuracy, Med-DualLoRA "
                               "(personalized) - FedAvg-LoRA, seen-centre balanced test cohort",
                               "cell": plan.primary_cell.spec, "primary": primary,
                               "n_replicates": cell.get("n_replicates"),
                               "n_test_subjects": cell.get("n_test_subjects")}
    if primary is not None:
        section["headroom"] = _headroom(runs, plan.primary_cell)
        section["headroom_fraction"] = _plain(inference.headroom_fraction(
            primary["balanced_accuracy"]["diff"], section["headroom"]))
        section.update(replicates_needed(primary["balanced_accuracy"]))
    # secondary family at the primary cell, Holm-adjusted over the comparators present
    comparators = [arm for arm in _arms_in(reps)
                   if arm not in PRIMARY and arm not in REFERENCES]
    secondary = {arm: compare(reps, PRIMARY[0], arm, plan.n_boot) for arm in comparators}
    adjusted = inference.holm({arm: value["balanced_accuracy"]["p"]
                               for arm, value in secondary.items()})
    for arm, value in secondary.items():
        value["balanced_accuracy"]["p_holm"] = adjusted[arm]
    section["secondary"] = secondary
    dose = []
    for dose_cell in plan.dose_cells():  # the control cells have their own section (gates)
        entry = cells.get(dose_cell.key, {})
        if "primary" not in entry:
            continue
        label = dose_cell.label
        ba = entry["primary"]["balanced_accuracy"]
        control = label == 0.0  # no annotation shift: a gain there is flagged (not a gate)
        dose.append({"cell": entry["shift"], "label_strength": label, **ba,
                     "negative_control": control,
                     "flag": ("positive gain without annotation shift: a bug or noise"
                              if control and ba["low"] is not None and ba["low"] > 0 else "")})
    section["dose_response"] = dose
    vendors = sorted({s.split("|")[0] for s in reps[0].strata}) if reps else []
    section["per_vendor_exploratory"] = {
        vendor: compare(_restrict(reps, vendor), *PRIMARY, plan.n_boot,
                        metrics=("balanced_accuracy",))
        for vendor in vendors if all(a in _arms_in(reps) for a in PRIMARY)}
    return section


def replicates_needed(ba: dict[str, Any]) -> dict[str, Any]:
    """How many independent replicates a t-test needs to detect 0.05 BA at this spread: cohort
    seeds (from the sd of the cohort means) when the design has several, else training seeds of
    the one cohort (conditional on it)."""
    if ba.get("df") is not None and ba.get("se") is not None:
        sd = float(ba["se"]) * math.sqrt(int(ba["df"]) + 1)
        return {"cohorts_needed_for_0.05": inference.seeds_needed(max(sd, 1e-6), delta=0.05)}
    return {"seeds_needed_for_0.05": inference.seeds_needed(
        max(ba.get("seed_sd") or 0.0, 1e-6), delta=0.05)}


def beats_reference(reps: list[inference.Replicate], arm: str, reference: str, n_boot: int
                    ) -> dict[str, Any]:
    """Whether ``arm`` beats ``reference`` on balanced accuracy (primary interval above 0)."""
    result = inference.paired_difference(reps, arm, reference, "balanced_accuracy",
                                         n_boot=n_boot)
    return {"arm": arm, "reference": reference, "diff": result.diff, "low": result.low,
            "high": result.high, "beats": bool(result.low > 0)}


def h2_section(plan: Plan, reps: list[inference.Replicate]) -> dict[str, Any]:
    present = _arms_in(reps)
    if not all(arm in present for arm in H2_ARMS):
        return {"skipped": "the plan has no all-blocks run at the primary cell"}
    two, every = H2_ARMS
    section: dict[str, Any] = {"margin": plan.margin,
                               "difference": compare(reps, two, every, plan.n_boot)}
    # Equivalence of two arms that learned nothing is trivially true: TOST only when both beat
    # the head-only probe (a logistic regression on the same frozen features).
    if "head_only_probe" not in present:
        section["tost"] = {"uninformative": "no head-only probe to check that both arms "
                           "learned something beyond the frozen features"}
        return section
    checks = [beats_reference(reps, arm, "head_only_probe", plan.n_boot) for arm in H2_ARMS]
    section["beats_head_only"] = checks
    if all(check["beats"] for check in checks):
        section["tost"] = _plain(inference.tost(reps, two, every, "balanced_accuracy",
                                                plan.margin, n_boot=plan.n_boot))
    else:
        losers = ", ".join(check["arm"] for check in checks if not check["beats"])
        section["tost"] = {"uninformative": f"{losers} does not beat the head-only probe, so "
                           "an equivalence of the two arms would say nothing about adapting "
                           "two blocks"}
    section["gap"] = _plain(inference.gap_recovered(
        inference.estimate(reps, two, "balanced_accuracy", n_boot=plan.n_boot),
        inference.estimate(reps, every, "balanced_accuracy", n_boot=plan.n_boot),
        inference.estimate(reps, "head_only_probe", "balanced_accuracy",
                           n_boot=plan.n_boot)))
    return section


def h3_section(plan: Plan, runs: list[TrainedRun], primary_cell: dict[str, Any]
               ) -> dict[str, Any]:
    """Bytes per round and in total per run spec (identical across seeds: checked)."""
    costs: dict[str, dict[str, float]] = {}
    for run in runs:
        if run.cohort.cell != plan.primary_cell or run.spec.holdout:
            continue
        values = run_cost(run.folder)
        known = costs.setdefault(run.spec.name, values)
        for key in ("bytes_up_total", "bytes_down_total"):
            if known.get(key) != values.get(key):
                raise ValueError(f"{run.folder}: {key} differs between seeds")
    arms = primary_cell.get("arms", {})
    rows = []
    for name, arm in ARMS.items():
        if arm.run not in costs or name not in arms:
            continue
        cost = costs[arm.run]
        ba = arms[name]["balanced_accuracy"]
        rows.append({"arm": name, "mb_total": (cost.get("bytes_up_total", 0.0)
                                              + cost.get("bytes_down_total", 0.0)) / 1e6,
                     "bytes_up_per_round": cost.get("bytes_up_per_round", 0.0),
                     "bytes_down_per_round": cost.get("bytes_down_per_round", 0.0),
                     "train_flops_total": cost.get("train_flops_total"),
                     "steps_total": cost.get("steps_total"),
                     "wall_seconds": cost.get("wall_seconds"),
                     "balanced_accuracy": ba["value"], "low": ba["low"], "high": ba["high"]})
    return {"rows": rows}


def _global_on(folder: Path, vendor: str) -> pd.DataFrame:
    """The global model's predictions on ``vendor``'s test subjects, by subject id."""
    frame = read_predictions(folder)
    part = frame[(frame["split"] == "test_global") & (frame["client"] == vendor)]
    return part[["subject_id", "label", "prob"]].sort_values("subject_id")


def lovo_section(plan: Plan, runs: list[TrainedRun]) -> dict[str, Any]:
    """Leave one vendor out (``lovo``): per held-out kind (``canon``, ``outlier``) and method,
    the global model's balanced accuracy and AUC on the vendor it never trained on, the same
    method's global model trained with it on the same subjects, and their paired difference."""
    base = {(run.spec.name, run.cohort.seed, run.train_seed): run.folder for run in runs
            if run.cohort.cell == plan.primary_cell and not run.spec.holdout}
    groups: dict[tuple[str, str], list[inference.Replicate]] = defaultdict(list)
    held: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for run in runs:
        if run.cohort.cell != plan.primary_cell or not run.spec.holdout:
            continue
        kind = "canon" if run.spec.holdout == lovo.CANON else "outlier"
        vendor = lovo.held_vendor(run.spec, run.cohort.seed)
        out = _global_on(run.folder, vendor)
        if out.empty:
            continue
        probs = {"held_out": out["prob"].to_numpy(dtype=np.float64)}
        trained = base.get((run.spec.strategy, run.cohort.seed, run.train_seed))
        if trained is not None:
            with_vendor = _global_on(trained, vendor)
            if with_vendor["subject_id"].tolist() == out["subject_id"].tolist():
                probs["trained_with_vendor"] = with_vendor["prob"].to_numpy(dtype=np.float64)
        labels = out["label"].to_numpy(dtype=np.int64)
        strata = np.array([f"{vendor}|{label}" for label in labels])
        groups[kind, run.spec.strategy].append(inference.Replicate(
            labels, strata, probs, run.cohort.seed, run.train_seed))
        held[kind, run.spec.strategy][str(run.cohort.seed)] = vendor
    section: dict[str, Any] = {
        "outlier_vendors": lovo.describe_outliers(plan.cohort_seeds),
        "rule": "canon: Canon held out; outlier: the vendor the generator draws with the "
                "cohort seed for its unseen centre (duallora/benchmark/lovo.py)"}
    for (kind, method), reps in sorted(groups.items()):
        present = _arms_in(reps)
        entry: dict[str, Any] = {"held_out_vendor": held[kind, method],
                                 "n_replicates": len(reps)}
        for arm in present:
            entry[arm] = {metric: _plain(inference.estimate(reps, arm, metric,
                                                            n_boot=plan.n_boot))
                          for metric in VENDOR_METRICS}
        if "trained_with_vendor" in present:
            entry["difference"] = compare(reps, "held_out", "trained_with_vendor", plan.n_boot)
        section.setdefault(kind, {})[method] = entry
    return _plain(section)
