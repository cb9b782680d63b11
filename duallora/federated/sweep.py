"""Run several strategies and seeds side by side, then tabulate them (the benchmark table).

``duallora sweep`` (``duallora.commands.sweep``) is the command line; this module does the work.
Each run is its own ``duallora train`` process limited to ``threads`` CPU threads, so wall
times are those of a small machine even on a big one. Writes ``OUT/<strategy>-s<seed>/`` run
directories, ``OUT/results.csv`` (``results.compare.results_table``) and ``OUT/paired.csv``
(every strategy against ``med_duallora`` on the same test subjects, per seed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from duallora.base.rundir import RunDir
from duallora.results.compare import paired_strategy_test, results_table

REFERENCE = "med_duallora"


def _command(strategy: str, seed: int, data: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "duallora", "train", "--data", str(data), "--strategy",
            strategy, "--seed", str(seed), "--out", str(out), "--overwrite", "--no-progress",
            *extra]


def run_one(strategy: str, seed: int, data: Path, out: Path, threads: int,
            extra: list[str]) -> tuple[str, int, float, int]:
    """One ``duallora train`` process; returns ``(strategy, seed, seconds, exit code)``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    result = subprocess.run(_command(strategy, seed, data, out, extra), env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{strategy} seed {seed} failed: {result.stderr.strip()[-500:]}", file=sys.stderr)
    return strategy, seed, time.perf_counter() - start, result.returncode


def run_sweep(data: Path, out: Path, seeds: Sequence[int], strategies: Sequence[str],
              jobs: int = 1, threads: int = 2, extra: Sequence[str] = ()) -> Path:
    """Train every ``strategy`` x ``seed`` (``jobs`` at a time) into ``out``, then write
    ``results.csv`` and ``paired.csv`` there; returns ``out``. A failed run is reported on
    stderr and left out of the tables."""
    extra = [e for e in extra if e != "--"]
    planned = [(s, seed) for seed in seeds for s in strategies]
    # fedavg_full is the slowest: start it first so the pool drains evenly
    planned.sort(key=lambda job: job[0] != "fedavg_full")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, s, seed, data, out / f"{s}-s{seed}", threads, extra)
                   for s, seed in planned]
        for future in futures:
            strategy, seed, seconds, code = future.result()
            print(f"{strategy:13s} seed {seed}: {seconds:6.1f} s (exit {code})", flush=True)
    runs = [out / f"{s}-s{seed}" for s, seed in planned
            if RunDir(out / f"{s}-s{seed}").predictions.is_file()]
    results_table(runs).to_csv(out / "results.csv", index=False)
    paired = []
    for seed in seeds:
        reference = out / f"{REFERENCE}-s{seed}"
        for strategy in strategies:
            other = out / f"{strategy}-s{seed}"
            if strategy == REFERENCE or other not in runs or reference not in runs:
                continue
            test = paired_strategy_test(reference, other, n_boot=500, seed=seed)
            paired.append({"seed": seed, "a": REFERENCE, "b": strategy, **test})
    pd.DataFrame(paired).to_csv(out / "paired.csv", index=False)
    return out

