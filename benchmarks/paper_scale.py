"""The paper's protocol at the paper's scale, timed end to end: ``gpu.py --paper``.

    python benchmarks/gpu.py --paper                # one H200: CineMA base, every strategy
    python benchmarks/gpu.py --paper --cpu-tiny     # the same code at test sizes (the tests)

What runs is the kit's own loop (``build_client_model``, ``prepare_cohort``, ``run_federation``,
``duallora.results``), strategy after strategy and seed after seed in one process, on a
synthetic cohort with the real subject counts: 855 subjects (Siemens 415, Philips 205, GE 185,
Canon 50, the full-scale phantom cohort's vendors), split 60/20/20 per vendor and label by the
kit's ``federated_split`` (513 train). The images are seeded uniform random volumes at the
model's input size, not phantoms: speed does not depend on content, and 855 phantoms would take
longer to generate than the benchmark may run. Labels are 25% NOR, 75% disease. The foundation
model is CineMA ``base`` with seeded random weights written once to a weights file, so every
strategy and seed shares one frozen prefix, as with CineMA's real weights.

Per run it records the phases (model build, prefix cache, training rounds with validation, final
test with bootstrap statistics and export), the training samples per second of the loop, and
the peak GPU memory; after all runs the statistics of a sweep (results table, paired tests
against med_duallora). A time guard stops starting runs when the next would end past
``--budget-seconds`` (default 480 s, so one call ends under 9 minutes) and then reports what was
measured plus a projection for every planned run, labelled as a projection.
Prints ONE JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

PAPER_VENDORS = {"Siemens": 415, "Philips": 205, "GE": 185, "Canon": 50}
TINY_VENDORS = {"Siemens": 12, "Philips": 10, "GE": 10, "Canon": 8}
REFERENCE = "med_duallora"


def log(text: str) -> None:
    print(f"[gpu.py --paper {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def synthetic_metadata(counts: dict[str, int], seed: int) -> pd.DataFrame:
    """Subjects per vendor, labels (every 4th NOR) and the kit's seeded federated split."""
    from data_prep.split import federated_split

    rows = [{"subject_id": f"{vendor}-{i:04d}", "vendor": vendor, "label": int(i % 4 != 0)}
            for vendor, n in counts.items() for i in range(n)]
    frame = pd.DataFrame(rows)
    frame["split"] = federated_split(frame, seed)
    return frame


def synthetic_vendors(frame: pd.DataFrame, image_size: tuple[int, ...], seed: int) -> dict:
    """Every vendor as the kit's ``ClientData`` holding seeded random (N, 2, H, W, D) images."""
    from duallora.federated.cohort import split_clients

    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((len(frame), 2, *image_size), generator=generator)
    return split_clients(images, frame)


def write_foundation(folder: Path, size: str) -> Path:
    """A seeded random ConvViT of ``size`` as a classifier weights file (loaded strictly by the
    kit, so every run starts from the same frozen weights, as with CineMA's)."""
    from duallora.model import build_convvit
    from duallora.model.checkpoints import save_weights

    model = build_convvit(size, seed=0)
    return save_weights(model.state_dict(), folder / f"random_{size}.safetensors",
                        {"size": size})


def split_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    table = frame.groupby(["vendor", "split"]).size().unstack(fill_value=0)
    return {str(v): {str(s): int(n) for s, n in row.items()} for v, row in table.iterrows()}


def one_run(config: Any, vendors: dict, out: Path, device: torch.device) -> dict[str, Any]:
    """One strategy and seed through the kit's loop; the seconds of each phase and the peak
    GPU memory."""
    from duallora.federated.client_model import build_client_model
    from duallora.federated.device import peak_memory
    from duallora.federated.loop import run_federation
    from duallora.federated.prepare import prepare_cohort
    from duallora.federated.rundir import RunDir
    from duallora.federated.sites import InProcessSites
    from duallora.federated.strategies import get_strategy
    from duallora.results.run_reader import read_metrics, read_timing

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    rundir = RunDir(out)
    rundir.prepare(resume=False, overwrite=True)
    strategy = get_strategy(config.strategy, config.head)
    model = build_client_model(config, strategy)
    built = time.perf_counter()
    cohort = prepare_cohort(config, model, loaded=vendors)
    prepared = time.perf_counter()
    sites = InProcessSites(config, model, cohort)
    rundir.write_config(config)
    run_federation(config, strategy, model, sites, rundir, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - started
    timing = read_timing(out)
    rounds = float(sum(timing["rounds"].values()))
    n_train = sum(c.n_train() for c in cohort.train_clients.values())
    metrics = read_metrics(out)
    macro = metrics[(metrics["split"] == "test") & (metrics["client"] == "macro")
                    & (metrics["metric"] == "balanced_accuracy")]["value"]
    return {"strategy": config.strategy, "seed": config.seed,
            "seconds": {"build": built - started, "prefix": prepared - built,
                        "rounds": rounds, "final_test_and_stats": timing["final_seconds"],
                        "total": total},
            "train_samples_per_second": (config.rounds * config.local_epochs * n_train
                                         / rounds if rounds > 0 else None),
            "peak_gpu_memory_bytes": peak_memory(device),
            "test_macro_balanced_accuracy": float(macro.iloc[0]) if len(macro) else None}


def statistics(runs: list[tuple[str, int, Path]], n_boot: int) -> tuple[float, int]:
    """A sweep's tables: results per run and paired tests against med_duallora (seconds)."""
    from duallora.results.compare import paired_strategy_test, results_table

    start = time.perf_counter()
    results_table([path for _, _, path in runs])
    paths = {(s, seed): path for s, seed, path in runs}
    tests = 0
    for (strategy, seed), path in paths.items():
        reference = paths.get((REFERENCE, seed))
        if strategy != REFERENCE and reference is not None:
            paired_strategy_test(reference, path, n_boot=n_boot, seed=seed)
            tests += 1
    return time.perf_counter() - start, tests


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole plan under the time guard; the JSON-able result."""
    from duallora.federated.client_model import model_input_size
    from duallora.federated.config import STRATEGY_NAMES, TrainConfig
    from duallora.federated.device import resolve_device

    started = time.perf_counter()
    tiny = bool(args.cpu_tiny)
    device = resolve_device("cpu" if tiny else args.device)
    size = "test-tiny" if tiny else "base"
    strategies = list(args.strategies or STRATEGY_NAMES)
    seeds = list(args.seeds if args.seeds is not None else ([0, 1] if tiny else [0, 1, 2, 3, 4]))
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="duallora-paper-"))
    work.mkdir(parents=True, exist_ok=True)
    fm = write_foundation(work, size)
    protocol = {"rounds": 2, "local_epochs": 1, "bootstrap": 50} if tiny else {}
    base = {"model_size": size, "fm": str(fm), "blocks": "last2", "device": str(device),
            "precision": args.precision, "data": str(work / "synthetic"),
            "cache_dir": str(work / "prefix_cache"), **protocol}
    image_size, _ = model_input_size(TrainConfig.from_dict(base))
    frame = synthetic_metadata(TINY_VENDORS if tiny else PAPER_VENDORS, seed=0)
    log(f"synthetic cohort: {len(frame)} subjects at {image_size} on {device}")
    vendors = synthetic_vendors(frame, image_size, seed=0)
    setup = time.perf_counter() - started
    planned = [(strategy, seed) for seed in seeds for strategy in strategies]
    done: list[dict[str, Any]] = []
    paths: list[tuple[str, int, Path]] = []
    stopped = None
    for strategy, seed in planned:
        elapsed = time.perf_counter() - started
        mean = float(np.mean([r["seconds"]["total"] for r in done])) if done else 0.0
        if done and elapsed + mean + args.stats_reserve > args.budget_seconds:
            stopped = (f"time guard: {elapsed:.0f} s spent, the next run would end past "
                       f"--budget-seconds {args.budget_seconds:.0f}")
            log(stopped)
            break
        config = TrainConfig.from_dict({**base, "strategy": strategy, "seed": seed})
        log(f"{strategy} seed {seed}")
        out = work / f"{strategy}-s{seed}"
        done.append(one_run(config, vendors, out, device))
        paths.append((strategy, seed, out))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    from duallora.federated.prefix_cache import memory_usage

    cache = memory_usage()
    stats_seconds, n_tests = statistics(paths, n_boot=50 if tiny else 500)  # 500: as a sweep
    wall = time.perf_counter() - started
    per_strategy = {}
    for strategy in strategies:
        mine = [r for r in done if r["strategy"] == strategy]
        if mine:
            peaks = [r["peak_gpu_memory_bytes"] for r in mine if r["peak_gpu_memory_bytes"]]
            per_strategy[strategy] = {
                "runs": len(mine),
                "mean_run_seconds": float(np.mean([r["seconds"]["total"] for r in mine])),
                "mean_train_samples_per_second": float(np.mean(
                    [r["train_samples_per_second"] for r in mine
                     if r["train_samples_per_second"]] or [np.nan])),
                "peak_gpu_memory_bytes": max(peaks) if peaks else None}
    complete_seeds = [seed for seed in seeds
                      if all(any(r["strategy"] == s and r["seed"] == seed for r in done)
                             for s in strategies)]
    result: dict[str, Any] = {
        "benchmark": "gpu.py --paper", "mode": "cpu-tiny" if tiny else "paper",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "model": size, "image_size": list(image_size),
        "precision": args.precision, "images": "seeded uniform random volumes (synthetic)",
        "subjects": int(len(frame)), "split": split_counts(frame),
        "n_train": int((frame["split"] == "train").sum()),
        "protocol": {k: getattr(TrainConfig.from_dict(base), k)
                     for k in ("rounds", "local_epochs", "batch_size", "eval_batch_size",
                               "bootstrap", "blocks", "selection")},
        "strategies": strategies, "seeds_planned": seeds, "seeds_complete": complete_seeds,
        "runs_planned": len(planned), "runs_done": len(done), "stopped": stopped,
        "setup_seconds": setup, "statistics_seconds": stats_seconds,
        "paired_tests": n_tests, "wall_seconds": wall, "prefix_cache": cache,
        "per_strategy": per_strategy, "runs": done}
    if len(done) < len(planned):
        per_run = {s: v["mean_run_seconds"] for s, v in per_strategy.items()}
        fallback = float(np.mean(list(per_run.values())))
        remaining = sum(per_run.get(s, fallback) for s, _ in planned[len(done):])
        result["projection"] = {
            "label": "PROJECTION, not measured: measured setup + measured runs + the measured "
                     "mean run time of each strategy for every run not done + statistics "
                     "scaled to every run",
            "all_runs_seconds": setup + sum(r["seconds"]["total"] for r in done) + remaining
            + stats_seconds * len(planned) / max(1, len(done))}
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paper", action="store_true",
                        help="the paper-scale protocol (every strategy, several seeds)")
    parser.add_argument("--cpu-tiny", action="store_true",
                        help="with --paper: test-tiny model, 40 subjects, on the CPU (tests)")
    parser.add_argument("--precision", default="bf16", help="--paper: fp32, bf16 (default) "
                        "or fp16")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="--paper: seeds (default 0-4; --cpu-tiny: 0 1)")
    parser.add_argument("--strategies", nargs="+", default=None, help="--paper: default all")
    parser.add_argument("--budget-seconds", type=float, default=480.0,
                        help="--paper: start no run that would end past this (default 480)")
    parser.add_argument("--stats-reserve", type=float, default=20.0,
                        help="--paper: seconds kept for the statistics at the end")
    parser.add_argument("--out", default="", help="--paper: keep the run folders here "
                        "(default: a temporary folder, removed)")
