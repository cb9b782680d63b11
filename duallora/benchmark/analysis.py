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
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from duallora.benchmark.plans import ARMS, H2_ARMS, PRIMARY, Plan, ShiftCell
from duallora.benchmark.runs import TrainedRun, run_cost
from duallora.federated.prepare import UNSEEN_SITE
from duallora.results import inference, run_reader

METRICS = ("balanced_accuracy", "auc", "sensitivity", "specificity", "brier", "ece")
VENDOR_METRICS = ("balanced_accuracy", "auc")
REFERENCES = ("chance", "head_only_probe", "raw_pixel_probe")


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


def replicates(runs: list[TrainedRun], cell: ShiftCell, arms: list[str],
               where: str = "seen", extra: dict[tuple[int, int], dict[str, np.ndarray]]
               | None = None) -> list[inference.Replicate]:
    """One ``Replicate`` per (cohort seed, train seed) at ``cell`` holding every arm that has
    predictions there (``extra``: reference arms computed outside the runs, by replicate)."""
    by_key: dict[tuple[int, int], dict[str, pd.DataFrame]] = defaultdict(dict)
    for run in runs:
        if run.cohort.cell != cell:
            continue
        predictions = read_predictions(run.folder)
        for arm in arms:
            spec = ARMS[arm]
            if spec.run == run.spec.name:
                probs = arm_probs(predictions, spec.split, where)
                if probs is not None:
                    by_key[run.cohort.seed, run.train_seed][arm] = probs
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


def _arms_in(reps: list[inference.Replicate]) -> list[str]:
    if not reps:
        return []
    return [arm for arm in reps[0].probs if all(arm in rep.probs for rep in reps)]


def arm_table(reps: list[inference.Replicate], n_boot: int, seed: int = 0
              ) -> dict[str, dict[str, Any]]:
    """Every arm's every metric with its interval, seed spread and sampling error."""
    return {arm: {metric: _plain(inference.estimate(reps, arm, metric, n_boot=n_boot,
                                                    seed=seed))
                  for metric in METRICS}
            for arm in _arms_in(reps)}


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
    for cell in plan.cells():
        reps = replicates(runs, cell, arms, extra=extra.get(cell.key))
        if not reps:
            continue
        entry: dict[str, Any] = {"shift": cell.spec, "n_replicates": len(reps),
                                 "n_test_subjects": int(len(reps[0].labels)),
                                 "arms": arm_table(reps, plan.n_boot)}
        if all(arm in _arms_in(reps) for arm in PRIMARY):
            entry["primary"] = compare(reps, *PRIMARY, plan.n_boot)
        if cell == primary:
            entry["vendors"] = vendor_table(reps, plan.n_boot)
        result["cells"][cell.key] = entry
        if cell == primary:
            result["primary_reps"] = reps
    reps = result.pop("primary_reps", [])
    result["h1"] = h1_section(plan, result["cells"], reps, runs)
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
    for cell_key, entry in cells.items():
        if "primary" not in entry:
            continue
        label = float(cell_key.rsplit("label", 1)[1])
        ba = entry["primary"]["balanced_accuracy"]
        control = label == 0.0
        dose.append({"cell": entry["shift"], "label_strength": label, **ba,
                     "negative_control": control,
                     "flag": ("positive gain in the negative control: a bug or noise"
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
        if run.cohort.cell != plan.primary_cell:
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


def cross_site_matrix(runs: list[TrainedRun], cell: ShiftCell) -> dict[str, Any]:
    """Balanced accuracy of each site's personalized model (rows; plus the global model) on
    every vendor's test subjects and the unseen centre (columns), mean over replicates."""
    from duallora.results.metrics import binary_metrics

    out: dict[str, Any] = {}
    for run in runs:
        if run.cohort.cell != cell:
            continue
        predictions = read_predictions(run.folder)
        table = out.setdefault(run.spec.name, defaultdict(lambda: defaultdict(list)))
        for (split, client), part in predictions.groupby(["split", "client"]):
            if split == "test":
                owner = client
            elif split.startswith("cross_site:"):
                owner = split.split(":", 1)[1]
            elif split in ("test_global", "holdout"):
                owner = "global"
            else:
                continue
            value = binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())
            table[owner][client].append(value["balanced_accuracy"])
    return {run: {owner: {target: float(np.mean(v)) for target, v in targets.items()}
                  for owner, targets in table.items()}
            for run, table in out.items()}


def subjects_per_site(runs: list[TrainedRun], cell: ShiftCell) -> dict[str, int]:
    """Test subjects of each vendor and of the unseen centre at ``cell`` (the cross-site
    matrix's column sizes, which bound its sampling error)."""
    for run in runs:
        if run.cohort.cell == cell:
            frame = read_predictions(run.folder)
            part = frame[frame["split"].isin(["test", "holdout", "test_global"])]
            return {str(k): int(v) for k, v in
                    part.drop_duplicates(["client", "subject_id"]).groupby("client").size()
                    .items()}
    return {}

