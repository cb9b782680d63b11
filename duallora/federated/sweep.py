"""Run several strategies and seeds side by side, then tabulate them (the benchmark table).

    python -m duallora.federated.sweep --data HARMONIZED --out DIR [--seeds 0 1 2]
        [--strategies ...] [--jobs 4] [--threads 2] [-- extra `duallora train` options]

Each run is its own ``duallora train`` process limited to ``--threads`` CPU threads, so wall
times are those of a small machine even on a big one. Writes ``DIR/<strategy>-s<seed>/`` run
directories, ``DIR/results.csv`` (``compare.results_table``) and ``DIR/paired.csv``
(every strategy against ``med_duallora`` on the same test subjects, per seed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from duallora.federated.config import STRATEGY_NAMES
from duallora.results.compare import paired_strategy_test, results_table


def _command(strategy: str, seed: int, data: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "duallora", "train", "--data", str(data), "--strategy",
            strategy, "--seed", str(seed), "--out", str(out), "--overwrite", "--no-progress",
            *extra]


def run_one(strategy: str, seed: int, data: Path, out: Path, threads: int,
            extra: list[str]) -> tuple[str, int, float, int]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    result = subprocess.run(_command(strategy, seed, data, out, extra), env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{strategy} seed {seed} failed: {result.stderr.strip()[-500:]}", file=sys.stderr)
    return strategy, seed, time.perf_counter() - start, result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duallora.federated.sweep",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args, extra = parser.parse_known_args(argv)
    extra = [e for e in extra if e != "--"]
    jobs = [(s, seed) for seed in args.seeds for s in args.strategies]
    # fedavg_full is the slowest: start it first so the pool drains evenly
    jobs.sort(key=lambda job: job[0] != "fedavg_full")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, s, seed, args.data, args.out / f"{s}-s{seed}",
                               args.threads, extra) for s, seed in jobs]
        for future in futures:
            strategy, seed, seconds, code = future.result()
            print(f"{strategy:13s} seed {seed}: {seconds:6.1f} s (exit {code})", flush=True)
    runs = [args.out / f"{s}-s{seed}" for s, seed in jobs
            if (args.out / f"{s}-s{seed}" / "predictions.csv").is_file()]
    table = results_table(runs)
    table.to_csv(args.out / "results.csv", index=False)
    paired = []
    for seed in args.seeds:
        reference = args.out / f"med_duallora-s{seed}"
        for strategy in args.strategies:
            other = args.out / f"{strategy}-s{seed}"
            if strategy == "med_duallora" or other not in runs or reference not in runs:
                continue
            test = paired_strategy_test(reference, other, n_boot=500, seed=seed)
            paired.append({"seed": seed, "a": "med_duallora", "b": strategy, **test})
    pd.DataFrame(paired).to_csv(args.out / "paired.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
