"""The benchmark that answers the paper's three questions (``duallora benchmark``).

- ``plans``       the pre-declared plans (demo, full, paper, test): cohorts, seeds, runs, margin.
- ``cohorts``     one v2 phantom cohort per shift cell and cohort seed, with its test cohort.
- ``runs``        every training run of a plan (ordinary kit runs, reused when finished).
- ``references``  chance, the head-only and raw-pixel probes, the oracle.
- ``analysis``    H1 (primary, secondary, dose-response), H2 (TOST), H3 (bytes), cross-site.
- ``report``      ``benchmark.json`` with provenance, markdown tables, figures.

The statistics live in ``duallora.results.inference``; docs/BENCHMARK.md explains the design.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from duallora.benchmark.plans import PLANS, Plan, get_plan

__all__ = ["PLANS", "Plan", "get_plan", "run_benchmark", "shared_data_dir"]

SHARED_DATA_ENV = "DUALLORA_BENCHMARK_DATA"


def shared_data_dir(default: Path) -> Path:
    """Where a benchmark keeps its cohorts and runs: ``$DUALLORA_BENCHMARK_DATA`` when set,
    else ``default``. Callers that run one plan in one such folder train each run once (a
    file lock lets them run side by side; a finished run is reused): ``make test`` points
    tests/test_benchmark.py and notebook 04 in quick mode, whose runs are a subset of the
    test's, at one folder."""
    shared = os.environ.get(SHARED_DATA_ENV, "").strip()
    return Path(shared) if shared else Path(default)


def run_benchmark(plan: Plan, data: Path, out: Path, *, progress: bool = True,
                  command: str | None = None) -> dict[str, Any]:
    """Build the cohorts, train every run, analyse, write ``out``; returns the result dict."""
    import json

    from duallora.benchmark.analysis import analyse
    from duallora.benchmark.provenance import code_version
    from duallora.benchmark.references import oracle_rows, reference_probs
    from duallora.benchmark.report import write_report
    from duallora.benchmark.runs import ensure_plan_runs, missing_runs

    start = time.perf_counter()
    runs = ensure_plan_runs(plan, Path(data), progress=progress)
    cohorts = list({(r.cohort.cell, r.cohort.seed): r.cohort for r in runs}.values())

    def seen_order(cohort):  # the replicates' subject order: seen-centre test subjects, sorted
        import pandas as pd

        meta = pd.read_csv(cohort.test / "metadata.csv")
        if "unseen_centre" in meta:
            meta = meta[meta["unseen_centre"].fillna(0).astype(int) != 1]
        return sorted(meta["subject_id"].astype(str))

    references = {"probs": reference_probs(plan, cohorts, seen_order)}
    result = analyse(plan, runs, references)
    result["oracle"] = oracle_rows(cohorts)
    result["plan"] = {**asdict(plan), "primary_cell_key": plan.primary_cell.key,
                      "missing_runs": missing_runs(plan)}
    result["cohorts"] = {f"{c.cell.key}/seed{c.seed}": json.loads(
        (c.raw / "cohort.json").read_text()) for c in cohorts}
    result["headroom"] = {f"{c.cell.key}/seed{c.seed}": c.headroom() for c in cohorts}
    command = command or " ".join(["duallora", *sys.argv[1:]])
    result["provenance"] = {**code_version(), "command": command,
                            "seconds": time.perf_counter() - start,
                            "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    result["markdown"] = str(write_report(result, Path(out)))
    return result
