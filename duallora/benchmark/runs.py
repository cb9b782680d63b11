"""Train (or reuse) every run of a plan: cohorts x shift cells x training seeds x run specs.

Each run is an ordinary kit run (``duallora train`` would give the same folder) with the
cohort's balanced test set as ``--test-data`` and ``--cross-site`` for strategies with private
parts; per-run bootstrap intervals are off (the benchmark's two-level bootstrap replaces them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duallora.base.config import STRATEGY_NAMES, TrainConfig
from duallora.base.rundir import RunDir
from duallora.benchmark.cohorts import BenchmarkCohort, ensure_cohort
from duallora.benchmark.plans import RUNS, Plan, RunSpec


@dataclass(frozen=True)
class TrainedRun:
    """One finished run and where it belongs in the design."""

    cohort: BenchmarkCohort
    train_seed: int
    spec: RunSpec
    folder: Path


def run_config(plan: Plan, cohort: BenchmarkCohort, spec: RunSpec, train_seed: int,
               cache_dir: Path) -> TrainConfig:
    """The shared settings of every run (same tuning budget), then the spec's structural
    overrides; a held-out vendor resolved for the cohort seed (``lovo.held_vendor``)."""
    from duallora.benchmark.lovo import held_vendor

    overrides = dict(spec.overrides)
    if spec.holdout:
        overrides["holdout_vendor"] = held_vendor(spec, cohort.seed)
    values: dict[str, Any] = {
        "data": str(cohort.harmonized), "test_data": str(cohort.test),
        "strategy": spec.strategy, "seed": train_seed, "model_size": plan.model_size,
        "fm": plan.fm, "cache_dir": str(cache_dir), "bootstrap": 0, "cross_site": True,
        **plan.train, **overrides}
    return TrainConfig.from_dict(values)


def run_folder(cohort: BenchmarkCohort, spec: RunSpec, train_seed: int) -> Path:
    from duallora.benchmark import lovo

    return cohort.root / "runs" / lovo.run_folder(spec, cohort.seed, train_seed)


def planned_runs(plan: Plan) -> Iterator[tuple[Any, int, int, RunSpec]]:
    """``(cell, cohort_seed, train_seed, spec)`` for every run, in training order; run specs
    whose strategy this kit does not have (yet) are left out and listed by ``missing_runs``."""
    for cell in plan.cells():
        for cohort_seed in plan.cohort_seeds:
            for train_seed in plan.train_seeds:
                for name in plan.runs_at(cell):
                    spec = RUNS[name]
                    if spec.strategy in STRATEGY_NAMES:
                        yield cell, cohort_seed, train_seed, spec


def missing_runs(plan: Plan) -> list[str]:
    return sorted({name for name in plan.runs if RUNS[name].strategy not in STRATEGY_NAMES})


def ensure_plan_runs(plan: Plan, data: Path, *, progress: bool = True) -> list[TrainedRun]:
    """Build every cohort, then train every run the plan needs, side by side (one per core,
    ``DUALLORA_JOBS``); finished runs are reused."""
    from filelock import FileLock

    data = Path(data)
    data.mkdir(parents=True, exist_ok=True)
    # two benchmarks on one data folder (``shared_data_dir``) take turns; the second reuses
    with FileLock(str(data / ".benchmark.lock")):
        return _ensure_plan_runs(plan, data, progress)


def _ensure_plan_runs(plan: Plan, data: Path, progress: bool) -> list[TrainedRun]:
    from duallora.benchmark.validation import ensure_validation_predictions
    from duallora.federated.reuse import ensure_all_trained

    cohorts: dict[tuple[Any, int], BenchmarkCohort] = {}
    done: list[TrainedRun] = []
    jobs: dict[Path, TrainConfig] = {}  # one job per folder (Canon can also be the outlier)
    for cell, cohort_seed, train_seed, spec in planned_runs(plan):
        if (cell, cohort_seed) not in cohorts:
            cohorts[cell, cohort_seed] = ensure_cohort(data, plan, cell, cohort_seed, progress)
        cohort = cohorts[cell, cohort_seed]
        folder = run_folder(cohort, spec, train_seed)
        jobs[folder] = run_config(plan, cohort, spec, train_seed, data / "prefix_cache")
        done.append(TrainedRun(cohort, train_seed, spec, folder))
    ensure_all_trained([(config, folder) for folder, config in jobs.items()],
                       progress=progress, desc=f"benchmark {plan.name}")
    for run in done:  # the thresholds' validation predictions (written once per run)
        if not run.spec.holdout:
            ensure_validation_predictions(run.folder)
    return done


def run_cost(folder: Path) -> dict[str, float]:
    """The cost rows of a run (``metrics.csv`` split ``cost``) and its wall time."""
    from duallora.results.run_reader import read_metrics

    metrics = read_metrics(folder)
    cost = metrics[metrics["split"] == "cost"]
    values = {row.metric: float(row.value) for row in cost.itertuples()}
    timing = json.loads(RunDir(folder).timing.read_text())
    values["wall_seconds"] = float(timing.get("total_seconds", float("nan")))
    return values
