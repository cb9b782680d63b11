"""What a plan costs before it runs: cohorts, runs, estimated CPU time and disk, and what a data
folder already holds (``duallora benchmark --plan NAME --size [--data DIR]``).

Counts are exact (the plan's cells x cohort seeds, and ``planned_runs`` with one folder per
run, as ``ensure_plan_runs`` trains them). Time and disk are estimates from measured numbers:

- **Runs**: core-seconds per run are calibrated on the finished runs of the data folder when it
  holds any (their ``timing.json``, mean per run spec, scaled by subjects to the cohort being
  estimated); otherwise on the ``demo`` measurement of docs/BENCHMARK.md (18 runs of 88
  training + 250 test subjects in 330 s, two side by side on 2 cores: 36.7 core-seconds per
  run), scaled linearly in training + test subjects. The all-blocks run has no prefix cache:
  3x an ordinary run (the plans' note).
- **Cohorts**: 0.34 core-seconds per subject at 7 cine frames (the same measurement: two demo
  cohorts of 88 + 250 subjects in about 230 s), linear in the mean frames per cine (7 at
  ``acq=0``, ``7 + acq x (25 - 7)`` otherwise: shifts.toml draws 20-30 frames).
- **Disk**: per cohort, bytes per subject x frames measured on a cohort of the data folder when
  there is one, else :data:`BYTES_PER_SUBJECT_FRAME` (measured on the ``test`` plan's
  cohorts, docs/BENCHMARK.md); runs are not counted (a few MB each).

Wall time is core-seconds / workers (``DUALLORA_JOBS``, default the machine's cores): the runs
train side by side, one per core; cohorts build one at a time on every core.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from duallora.benchmark.cohorts import MARKER, BenchmarkCohort, cohort_settings
from duallora.benchmark.plans import Plan, ShiftCell

DEMO_RUN_CORE_SECONDS = 330.0 * 2 / 18   # demo: 18 runs, two side by side, 330 s
DEMO_RUN_SUBJECTS = 88 + 250             # its training + test subjects per cohort
COHORT_SECONDS_PER_SUBJECT_7F = 230.0 / (2 * (88 + 250))
BYTES_PER_SUBJECT_FRAME = 460_000        # test plan's 3 cohorts (acq=0), raw + harmonized
ALL_BLOCKS_FACTOR = 3.0
FRAMES_REF, FRAMES_REAL = 7.0, 25.0      # shifts.toml acq.frames: ref 7, drawn in [20, 30]


def training_subjects(plan: Plan) -> int:
    from data_prep.phantoms.cohort_v1 import scaled_counts

    return sum(sum(mix.values()) for mix in scaled_counts(plan.scale).values())


def test_subjects(plan: Plan) -> int:
    return plan.test_per_vendor * 5  # four vendors, balanced, and the unseen centre


def mean_frames(cell: ShiftCell) -> float:
    return FRAMES_REF + cell.acq * (FRAMES_REAL - FRAMES_REF)


def _cohort_done(data: Path, plan: Plan, cell: ShiftCell, seed: int) -> bool:
    from duallora.federated.reuse import read_marker

    root = Path(data) / cell.key / f"seed{seed}"
    return (read_marker(root / MARKER) == cohort_settings(plan, cell, seed)
            and (root / "harmonized" / "metadata.csv").is_file())


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _measured(data: Path | None, plan: Plan) -> tuple[dict[str, float], float | None]:
    """Mean core-seconds per run spec (normalised to the demo's subjects) and bytes per
    subject-frame from what the data folder already holds."""
    if data is None or not Path(data).is_dir():
        return {}, None
    seconds: dict[str, list[float]] = {}
    per_frame = []
    for marker in sorted(Path(data).glob(f"*/seed*/{MARKER}")):
        root = marker.parent
        settings = json.loads(marker.read_text())
        subjects = _subjects_of(settings)
        for timing in root.glob("runs/*/timing.json"):
            config = json.loads((timing.parent / "config.json").read_text())
            total = json.loads(timing.read_text()).get("total_seconds")
            if total and subjects:
                name = _spec_of(timing.parent.name, config)
                seconds.setdefault(name, []).append(total * DEMO_RUN_SUBJECTS / subjects)
        raw, harmonized = root / "raw", root / "harmonized"
        if subjects and raw.is_dir() and harmonized.is_dir():
            from data_prep.phantoms.shifts import parse_shifts

            acq = parse_shifts(str(settings.get("shift", ""))).acq
            frames = FRAMES_REF + acq * (FRAMES_REAL - FRAMES_REF)
            per_frame.append((_folder_bytes(raw) + _folder_bytes(harmonized))
                             / (subjects * frames))
    means = {name: sum(v) / len(v) for name, v in seconds.items()}
    return means, (sum(per_frame) / len(per_frame) if per_frame else None)


def _subjects_of(settings: dict[str, Any]) -> int:
    from data_prep.phantoms.cohort_v1 import scaled_counts

    try:
        train = sum(sum(mix.values()) for mix in scaled_counts(float(settings["scale"])).values())
        return int(train + 5 * int(settings["test_per_vendor"]))
    except (KeyError, TypeError, ValueError):
        return 0


def _spec_of(folder: str, config: dict[str, Any]) -> str:
    name = folder.rsplit("_seed", 1)[0]
    return "lovo:" + str(config.get("strategy")) if "_lovo-" in name else name


def plan_size(plan: Plan, data: Path | None = None, workers: int | None = None
              ) -> dict[str, Any]:
    """Cohorts, runs, estimated core-seconds, wall time and disk of ``plan``; with ``data``,
    how much of it that folder already holds (finished cohorts and runs are reused)."""
    from duallora.benchmark.runs import planned_runs, run_config, run_folder
    from duallora.federated.reuse import default_workers, is_finished

    workers = workers or default_workers()
    measured, bytes_per_frame = _measured(data, plan)
    n_train, n_test = training_subjects(plan), test_subjects(plan)
    subjects = n_train + n_test
    cells = plan.cells()
    cohorts = [(cell, seed) for cell in cells for seed in plan.cohort_seeds]
    cohort_seconds = {(cell, seed): subjects * COHORT_SECONDS_PER_SUBJECT_7F
                      * mean_frames(cell) / FRAMES_REF for cell, seed in cohorts}
    per_frame = bytes_per_frame or BYTES_PER_SUBJECT_FRAME
    cohort_bytes = {key: subjects * mean_frames(key[0]) * per_frame for key in cohorts}
    folders: dict[Path, tuple[str, float]] = {}
    by_spec: Counter[str] = Counter()
    done_runs = 0
    root = Path(data) if data is not None else Path("<data>")
    for cell, cohort_seed, train_seed, spec in planned_runs(plan):
        cohort = BenchmarkCohort(cell, cohort_seed, root / cell.key / f"seed{cohort_seed}")
        folder = run_folder(cohort, spec, train_seed)
        if folder in folders:
            continue
        key = "lovo:" + spec.strategy if spec.holdout else spec.name
        base = measured.get(key, measured.get(spec.strategy, DEMO_RUN_CORE_SECONDS))
        if key not in measured and spec.overrides.get("blocks") == "all":
            base = DEMO_RUN_CORE_SECONDS * ALL_BLOCKS_FACTOR
        seconds = base * subjects / DEMO_RUN_SUBJECTS
        if plan.model_size == "test-tiny" and key not in measured:
            seconds = 5.0  # the tests' model: seconds per run
        finished = data is not None and is_finished(
            run_config(plan, cohort, spec, train_seed, root / "prefix_cache"), folder)
        done_runs += finished
        folders[folder] = (spec.name, 0.0 if finished else seconds)
        by_spec[spec.name] += 1
    done_cohorts = [key for key in cohorts if data is not None and _cohort_done(data, plan, *key)]
    todo_cohort_seconds = sum(v for k, v in cohort_seconds.items() if k not in done_cohorts)
    todo_run_seconds = sum(seconds for _, seconds in folders.values())
    return {
        "plan": plan.name, "cells": [cell.spec for cell in cells],
        "cohort_seeds": list(plan.cohort_seeds), "train_seeds": list(plan.train_seeds),
        "n_cohorts": len(cohorts), "n_runs": len(folders), "runs_by_spec": dict(by_spec),
        "subjects_per_cohort": {"training": n_train, "test": n_test},
        "finished": {"cohorts": len(done_cohorts), "runs": done_runs} if data else None,
        "estimate": {
            "cohort_core_seconds": todo_cohort_seconds,
            "run_core_seconds": todo_run_seconds,
            "workers": workers,
            "wall_hours": (todo_cohort_seconds + todo_run_seconds / max(workers, 1)) / 3600,
            "disk_gb": sum(cohort_bytes.values()) / 1e9,
            "basis": ("core-seconds per run measured in this data folder" if measured else
                      "the demo measurement of docs/BENCHMARK.md, linear in subjects")
                     + "; cohorts 0.34 core-s per subject at 7 frames, linear in frames; disk "
                     f"{per_frame:,.0f} bytes per subject-frame"
                     + (" (measured here)" if bytes_per_frame else ""),
        },
    }


def size_text(size: dict[str, Any]) -> str:
    """The sizing as a few lines for the terminal."""
    estimate = size["estimate"]
    lines = [f"plan {size['plan']}: {size['n_cohorts']} cohorts ({len(size['cells'])} cells x "
             f"{len(size['cohort_seeds'])} cohort seeds; {size['subjects_per_cohort']['training']}"
             f" training + {size['subjects_per_cohort']['test']} test subjects each), "
             f"{size['n_runs']} runs"]
    lines.append("runs by spec: " + ", ".join(f"{k} {v}" for k, v in
                                                size["runs_by_spec"].items()))
    if size.get("finished"):
        lines.append(f"already in the data folder (reused): {size['finished']['cohorts']} "
                     f"cohorts, {size['finished']['runs']} runs")
    lines.append(f"still to compute: ~{estimate['cohort_core_seconds'] / 3600:.1f} core-hours of "
                 f"cohorts, ~{estimate['run_core_seconds'] / 3600:.1f} core-hours of runs; "
                 f"~{estimate['wall_hours']:.1f} h wall on {estimate['workers']} workers; "
                 f"disk ~{estimate['disk_gb']:.1f} GB")
    lines.append(f"basis: {estimate['basis']}")
    return "\n".join(lines)
