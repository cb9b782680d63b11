"""Build or reuse one v2 phantom cohort per (shift cell, cohort seed) of a plan.

Layout under the benchmark's data folder::

    <data>/<cell key>/seed<k>/raw/             phantoms v2 (raw layouts, test_harmonized/,
                                                headroom.json, centres.csv, cohort.json)
    <data>/<cell key>/seed<k>/harmonized/      the training cohort, harmonized
    <data>/prefix_cache/                       one prefix cache for every cohort (keyed by
                                                images and weights, so nothing is mixed up)

A JSON marker per step records the settings; a changed plan rebuilds only what changed.

``DUALLORA_COHORT_CACHE=DIR`` keeps every cohort built under ``DIR`` by its settings and copies
it into any benchmark data folder that asks for the same settings (one build per settings,
whatever the number of folders or processes: a file lock serializes the build). ``make test``
sets it, so its pytest lane and notebook 04 in quick mode build the `test` plan's cohorts once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.conventions import phantom_raw_roots
from duallora.base.markers import build_once, is_built, write_marker
from duallora.benchmark.plans import Plan, ShiftCell

MARKER = "benchmark_cohort.json"
COHORT_CACHE_ENV = "DUALLORA_COHORT_CACHE"


@dataclass(frozen=True)
class BenchmarkCohort:
    """The folders of one cohort: train on ``harmonized``, test on ``test``."""

    cell: ShiftCell
    seed: int
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def harmonized(self) -> Path:
        return self.root / "harmonized"

    @property
    def test(self) -> Path:
        from data_prep.phantoms import TEST_DIR

        return self.raw / TEST_DIR

    def headroom(self) -> dict[str, Any]:
        return json.loads((self.raw / "headroom.json").read_text())

    def centres(self) -> Any:
        import pandas as pd

        return pd.read_csv(self.raw / "centres.csv")


def cohort_settings(plan: Plan, cell: ShiftCell, seed: int) -> dict[str, Any]:
    return {"generator": "v2", "scale": plan.scale, "seed": seed, "shift": cell.spec,
            "test_per_vendor": plan.test_per_vendor, "unseen_test": plan.test_per_vendor}


def ensure_cohort(data: Path, plan: Plan, cell: ShiftCell, seed: int,
                  progress: bool = True) -> BenchmarkCohort:
    """The cohort of ``cell`` and ``seed``: written and harmonized once, then reused."""
    from data_prep.harmonize import harmonize_datasets
    from data_prep.phantoms import parse_shifts, write_phantom_cohort

    cohort = BenchmarkCohort(cell, seed, Path(data) / cell.key / f"seed{seed}")
    wanted = cohort_settings(plan, cell, seed)
    marker = cohort.root / MARKER
    if is_built(marker, wanted, cohort.harmonized / "metadata.csv"):
        return cohort
    if cohort.root.exists():  # its runs were trained on another cohort: they go too
        shutil.rmtree(cohort.root)

    def build(into: BenchmarkCohort) -> None:
        write_phantom_cohort(into.raw, scale=plan.scale, seed=seed, generator="v2",
                             shifts=parse_shifts(cell.spec),
                             test_per_vendor=plan.test_per_vendor,
                             unseen_test=plan.test_per_vendor, progress=progress)
        harmonize_datasets(out=into.harmonized, seed=seed, **phantom_raw_roots(into.raw))

    cache = os.environ.get(COHORT_CACHE_ENV)
    if cache:
        cached = cached_cohort(Path(cache), wanted, cell, seed, build)
        for part in ("raw", "harmonized"):
            shutil.copytree(cached.root / part, cohort.root / part)
    else:
        build(cohort)
    write_marker(marker, wanted)
    return cohort


def cached_cohort(cache: Path, wanted: dict[str, Any], cell: ShiftCell, seed: int,
                  build: Callable[[BenchmarkCohort], None]) -> BenchmarkCohort:
    """The cache's cohort of these settings, built by ``build(cohort)`` if it is not there
    (``build_once``: two processes asking at once build it once)."""
    key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    cached = BenchmarkCohort(cell, seed, cache / key)
    cache.mkdir(parents=True, exist_ok=True)
    build_once(cached.root, wanted, lambda: build(cached), marker=cached.root / MARKER)
    return cached
