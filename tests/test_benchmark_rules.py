"""The benchmark's written rules, checked without training: shift cells from the generator's
named cells, the same tuning budget for every method, equal trainable parameters for
FedAvg-LoRA rank 8 and Med-DualLoRA, the held-out vendors, the control gates, the validation
threshold at 90% specificity, provenance and the plan sizing."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from data_prep.phantoms.centres import draw_centres
from data_prep.phantoms.shifts import FAMILIES, load_config, parse_shifts
from duallora.benchmark import controls, lovo, provenance
from duallora.benchmark.cohorts import BenchmarkCohort
from duallora.benchmark.plans import (
    CONTROL_RUNS,
    EXTRA_DEFAULTS,
    PLANS,
    PROTOCOL,
    RUNS,
    STRUCTURAL_FIELDS,
    RunSpec,
    ShiftCell,
)
from duallora.benchmark.runs import planned_runs, run_config, run_folder
from duallora.benchmark.sizing import plan_size
from duallora.errors import KitError
from duallora.results import inference, thresholds


# ------------------------------------------------------------------------------ shift cells
def test_cells_left_at_the_generators_defaults_keep_their_three_family_spec_and_key():
    defaults = load_config()["strengths"]
    assert {k: float(defaults[k]) for k in EXTRA_DEFAULTS} == EXTRA_DEFAULTS
    cell = ShiftCell(1.0, 1.0, 0.5)
    assert cell.spec == "acq=1,mix=1,label=0.5" and cell.key == "acq1_mix1_label0.5"
    # the three-family spec means exactly the six strengths of the cell
    assert parse_shifts(cell.spec).as_dict() == cell.strengths()
    assert ShiftCell.named("realistic") == ShiftCell(1.0, 1.0, 1.0)
    assert PLANS["full"].primary_cell == ShiftCell.named("realistic")


@pytest.mark.parametrize("name", ["negative", "positive"])
def test_named_cells_carry_every_family_of_the_generator(name: str):
    cell = ShiftCell.named(name)
    assert parse_shifts(cell.spec).as_dict() == parse_shifts(name).as_dict()
    assert set(cell.spec.replace("=", ",").split(",")[::2]) == set(FAMILIES)
    assert cell.key != ShiftCell(cell.acq, cell.mix, cell.label).key
    budget = ShiftCell.named(name, "budget", acq=0.0)
    assert budget.acq == 0.0 and budget.camps == cell.camps and "budget" in budget.name


def test_every_plan_runs_both_controls_at_the_generators_cells():
    assert not PLANS["demo"].controls()  # the demo's budget (plans.py); its verdict is withheld
    for plan in PLANS.values():
        if plan.name == "demo":
            continue
        expected = {"negative": parse_shifts("negative").as_dict(),
                    "positive": parse_shifts("positive").as_dict()}
        if plan.name == "test":  # budget: 7-frame cines at every cell
            expected["positive"]["acq"] = 0.0
        got = {kind: cell.strengths() for kind, cell in plan.controls().items()}
        assert got == expected, plan.name
        for cell in plan.controls().values():
            assert set(CONTROL_RUNS) <= set(plan.runs_at(cell)), plan.name
            assert cell in plan.cells()


# --------------------------------------------------------------------- same tuning budget
def test_a_run_spec_cannot_tune_an_optimisation_setting():
    with pytest.raises(KitError, match="not a structural field"):
        RunSpec("tuned", "fedavg_lora", {"lr": 1e-3})
    assert all(set(spec.overrides) <= STRUCTURAL_FIELDS for spec in RUNS.values())


@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_every_run_of_a_plan_shares_every_non_structural_setting(plan_name: str):
    """All runs' configurations agree on everything but the strategy, the seed, the cohort and
    the declared structural fields: no method gets its own learning rate or schedule."""
    plan = PLANS[plan_name]
    free = {"strategy", "seed", "data", "test_data", *STRUCTURAL_FIELDS}
    shared = None
    for cell, cohort_seed, train_seed, spec in planned_runs(plan):
        cohort = BenchmarkCohort(cell, cohort_seed, Path("/nonexistent") / cell.key)
        values = dataclasses.asdict(run_config(plan, cohort, spec, train_seed, Path("c")))
        rest = {k: v for k, v in values.items() if k not in free}
        shared = shared or rest
        assert rest == shared, spec.name
    assert all(shared[key] == value for key, value in PROTOCOL.items())


def test_fedavg_lora_r8_trains_as_many_parameters_as_med_duallora():
    from duallora.federated.client_model import build_client_model
    from duallora.federated.config import TrainConfig

    def trainable(strategy: str, **changes) -> int:
        config = TrainConfig.from_dict({"strategy": strategy, "model_size": "test-tiny",
                                        "fm": "none", **changes})
        model = build_client_model(config)
        return model.count(model.trainable_names)

    spec = RUNS["fedavg_lora_r8"]
    dual = trainable("med_duallora")
    assert dual == trainable(spec.strategy, **spec.overrides)
    assert dual > trainable("fedavg_lora")  # rank 4 alone trains fewer
    # alpha / rank of the rank-8 adapter equals each rank-4 adapter's (the same scale)
    defaults = TrainConfig()
    assert spec.overrides["alpha"] / spec.overrides["rank"] == defaults.alpha / defaults.rank \
        == defaults.local_alpha / defaults.local_rank


# ---------------------------------------------------------------------- leave one vendor out
@pytest.mark.parametrize("seed", range(6))
def test_the_outlier_vendor_is_the_generators_unseen_centre_vendor(seed: int):
    for shift in ("realistic", "negative", "positive"):
        centres = draw_centres(parse_shifts(shift), seed)
        assert lovo.outlier_vendor(seed) == centres[-1].vendor and centres[-1].unseen


def test_canon_as_the_outlier_shares_one_run_folder():
    seeds = [seed for seed in range(40) if lovo.outlier_vendor(seed) == "Canon"]
    other = next(seed for seed in range(40) if lovo.outlier_vendor(seed) != "Canon")
    canon, outlier = RUNS["med_duallora_lovo_canon"], RUNS["med_duallora_lovo_outlier"]
    assert seeds  # a quarter of the seeds, in expectation
    assert lovo.run_folder(canon, seeds[0], 1) == lovo.run_folder(outlier, seeds[0], 1)
    assert lovo.run_folder(canon, other, 1) != lovo.run_folder(outlier, other, 1)
    cohort = BenchmarkCohort(PLANS["full"].primary_cell, other, Path("/nonexistent"))
    config = run_config(PLANS["full"], cohort, outlier, 0, Path("c"))
    assert config.holdout_vendor == lovo.outlier_vendor(other)


# ----------------------------------------------------------------------- validation threshold
def test_threshold_is_the_smallest_validation_probability_reaching_90_percent_specificity():
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(37, int), np.ones(23, int)]
    probs = np.r_[rng.uniform(0, 0.7, 37), rng.uniform(0.3, 1, 23)]
    cut = thresholds.threshold_at_specificity(labels, probs)
    negatives = probs[labels == 0]
    assert np.mean(negatives < cut) >= 0.9
    lower = probs[probs < cut]
    if len(lower):  # the next smaller candidate misses the target
        assert np.mean(negatives < lower.max()) < 0.9
    assert cut in probs
    # exactly at the edge: 9 of 10 negatives must fall below
    labels = np.r_[np.zeros(10, int), 1]
    probs = np.r_[np.arange(10) / 10, 0.95]
    assert thresholds.threshold_at_specificity(labels, probs) == pytest.approx(0.9)
    # every probability tied: nothing reaches 0.9 but +inf
    assert thresholds.threshold_at_specificity(np.array([0, 0, 1]), np.full(3, 0.4)) == np.inf
    with pytest.raises(KitError, match="no validation subject with label 0"):
        thresholds.threshold_at_specificity(np.ones(3, int), np.full(3, 0.4))


def test_binarized_arm_gives_the_sensitivity_at_the_threshold_through_the_inference():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    probs = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 80), 0, 1)
    cut = 0.62
    rep = inference.Replicate(labels, np.array(["A|" + str(v) for v in labels]),
                              {"arm": thresholds.binarize(probs, cut)})
    got = inference.estimate([rep], "arm", "sensitivity", n_boot=50)
    assert got.value == pytest.approx(np.mean(probs[labels == 1] >= cut))
    spec = inference.estimate([rep], "arm", "specificity", n_boot=50)
    assert spec.value == pytest.approx(np.mean(probs[labels == 0] < cut))


# ---------------------------------------------------------------------------- control gates
def _reps(effects: dict[str, float], n_cohorts: int = 4, seed: int = 0
          ) -> list[inference.Replicate]:
    """Replicates whose arms add ``effect`` to a shared noisy score before thresholding."""
    rng = np.random.default_rng(seed)
    out = []
    for cohort in range(n_cohorts):
        for train in range(2):
            labels = np.r_[np.zeros(150, int), np.ones(150, int)]
            base = labels * 0.15 + rng.normal(0.42, 0.2, 300)
            probs = {arm: np.clip(base + labels * effect + rng.normal(0, 0.02, 300), 0, 1)
                     for arm, effect in effects.items()}
            strata = np.array([f"V|{v}" for v in labels])
            out.append(inference.Replicate(labels, strata, probs, cohort, train))
    return out


def test_gates_follow_their_written_rules():
    null = _reps({"fedavg_lora": 0.0, "med_duallora": 0.0, "fedavg_lora_ft": 0.0})
    gain = _reps({"fedavg_lora": 0.0, "med_duallora": 0.25, "fedavg_lora_ft": 0.25})
    cell = ShiftCell.named("negative")
    negative = controls.control_entry("negative", cell, null, n_boot=100)
    assert negative["passed"] is True and negative["interval"][0] <= 0
    assert negative["cell"] == cell.spec and negative["method"].startswith("t over 4 cohort")
    assert negative["beside"]["comparison"] == "fedavg_lora_ft - fedavg_lora"
    assert controls.control_entry("negative", cell, gain, 100)["passed"] is False
    positive = controls.control_entry("positive", cell, gain, n_boot=100)
    assert positive["passed"] is True and positive["interval"][0] > 0
    assert controls.control_entry("positive", cell, null, 100)["passed"] is False
    missing = controls.control_entry("positive", cell, _reps({"fedavg_lora": 0.0,
                                                               "med_duallora": 0.0}), 100)
    assert missing["passed"] is None


def test_a_failed_or_missing_control_withholds_the_h1_verdict():
    better = {"balanced_accuracy": {"low": 0.02, "high": 0.08}}
    ok = {"negative": {"passed": True}, "positive": {"passed": True}}
    assert controls.verdict(better, ok)["status"] == "med_duallora_better"
    blind = controls.verdict(better, {**ok, "positive": {"passed": False}})
    assert blind["status"] == "withheld" and "could not see personalization" in blind["text"]
    phantom = controls.verdict(better, {**ok, "negative": {"passed": False}})
    assert phantom["status"] == "withheld" and "gains where none exist" in phantom["text"]
    assert controls.verdict(better, {"negative": {"passed": True}})["status"] == "withheld"
    unresolved = {"balanced_accuracy": {"low": -0.02, "high": 0.04}}
    assert controls.verdict(unresolved, ok)["status"] == "not_resolvable"


# ------------------------------------------------------------------------ provenance, sizing
def test_provenance_names_the_commit_and_a_dirty_tree_or_null_without_git(monkeypatch):
    version = provenance.code_version()
    if version["commit"] is not None:  # this checkout is a git tree
        assert re.fullmatch(r"[0-9a-f]{40}", version["commit"])
        assert isinstance(version["dirty"], bool)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert provenance.code_version() == {"commit": None, "dirty": None}


@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_sizing_counts_every_cohort_and_one_run_per_folder(plan_name: str, tmp_path: Path):
    plan = PLANS[plan_name]
    size = plan_size(plan, tmp_path)
    assert size["n_cohorts"] == len(plan.cells()) * len(plan.cohort_seeds)
    folders = {run_folder(BenchmarkCohort(cell, c, tmp_path / cell.key / f"seed{c}"), spec, t)
               for cell, c, t, spec in planned_runs(plan)}
    assert size["n_runs"] == len(folders)
    assert size["finished"] == {"cohorts": 0, "runs": 0}
    assert size["estimate"]["run_core_seconds"] > 0 and size["estimate"]["disk_gb"] > 0
    json.dumps(size)  # JSON-ready
