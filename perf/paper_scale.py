"""The paper's protocol at the paper's scale, timed end to end: ``gpu.py --paper``.

    python perf/gpu.py --paper                # one H200: CineMA base, every strategy
    python perf/gpu.py --paper --cpu-tiny     # the same code at test sizes (the tests)

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
against med_duallora). ``--jobs`` runs (default 6) share the GPU at once, each its own process
with its own copy of the cohort and of the prefix cache: a run's final statistics (bootstrap CIs)
are CPU work that would otherwise leave the GPU idle. A time guard: a worker starts no run that,
at the length of its previous one, would end past ``--budget-seconds`` (default 480 s, so one
call ends under 9 minutes); the result then reports what was measured plus a projection for
every planned run, labelled as a projection.
Prints ONE JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import os
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
    from duallora.base.device import peak_memory
    from duallora.base.rundir import RunDir
    from duallora.federated.client_model import build_client_model
    from duallora.federated.loop import run_federation
    from duallora.federated.prepare import prepare_cohort
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


def paired_test(task: tuple[Path, Path, int, int]) -> int:
    """One paired test of a strategy against med_duallora (a sweep's ``paired.csv`` row)."""
    from duallora.results.compare import paired_strategy_test

    reference, other, seed, n_boot = task
    paired_strategy_test(reference, other, n_boot=n_boot, seed=seed)
    return 1


# -- the worker: one per process (``--jobs``), or this process itself (``--jobs 1``) ----------
_WORKER: dict[str, Any] = {}


def worker_init(spec: dict[str, Any]) -> None:
    """Build this worker's copy of the synthetic cohort (seeded: the same in every worker)."""
    import torch as _torch

    from duallora.federated.prefix_cache import clear_memory

    _torch.set_num_threads(spec["threads"])
    clear_memory()  # this process's cache holds this benchmark's states only (--jobs 1)
    frame = synthetic_metadata(spec["counts"], seed=0)
    _WORKER.clear()
    _WORKER.update(spec, vendors=synthetic_vendors(frame, tuple(spec["image_size"]), seed=0),
                   last_seconds=None)


def warm_prefix_cache(spec: dict[str, Any]) -> float:
    """Compute the shared prefix once, here, into the disk cache, so parallel workers read it
    instead of each computing and writing its own copy (9 GB each at paper scale, in bf16)."""
    from duallora.base.config import TrainConfig
    from duallora.federated.client_model import build_client_model
    from duallora.federated.prefix_cache import clear_memory
    from duallora.federated.prepare import prepare_cohort

    start = time.perf_counter()
    worker_init({**spec, "threads": torch.get_num_threads()})
    config = TrainConfig.from_dict({**spec["base"], "strategy": REFERENCE})
    model = build_client_model(config)
    prepare_cohort(config, model, loaded=_WORKER["vendors"])
    del model
    clear_memory()
    _WORKER.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return time.perf_counter() - start


def worker_run(task: tuple[str, int]) -> dict[str, Any]:
    """One run, unless this worker's last run says the next would end past the deadline."""
    from duallora.base.config import TrainConfig
    from duallora.base.device import resolve_device
    from duallora.federated.prefix_cache import memory_usage

    strategy, seed = task
    last = _WORKER["last_seconds"]
    if last is not None and time.time() + last > _WORKER["deadline"]:
        return {"strategy": strategy, "seed": seed, "skipped": True}
    config = TrainConfig.from_dict({**_WORKER["base"], "strategy": strategy, "seed": seed})
    device = resolve_device(config.device)
    log(f"{strategy} seed {seed}")
    try:
        result = one_run(config, _WORKER["vendors"],
                         Path(_WORKER["work"]) / f"{strategy}-s{seed}", device)
    except Exception as err:  # one failed run must not lose the others' measurements
        log(f"{strategy} seed {seed} failed: {type(err).__name__}: {err}")
        return {"strategy": strategy, "seed": seed, "error": f"{type(err).__name__}: {err}"}
    result["prefix_cache"] = memory_usage()
    _WORKER["last_seconds"] = result["seconds"]["total"]
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole plan under the time guard; the JSON-able result."""
    import multiprocessing

    from duallora.base.config import STRATEGY_NAMES, TrainConfig
    from duallora.base.device import resolve_device
    from duallora.federated.client_model import model_input_size

    started = time.perf_counter()
    wall_start = time.time()
    tiny = bool(args.cpu_tiny)
    device = resolve_device("cpu" if tiny else args.device)
    size = "test-tiny" if tiny else "base"
    strategies = list(args.strategies or STRATEGY_NAMES)
    seeds = list(args.seeds if args.seeds is not None else ([0, 1] if tiny else [0, 1, 2, 3, 4]))
    jobs = max(1, args.jobs if args.jobs else (1 if tiny else 6))
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="duallora-paper-"))
    work.mkdir(parents=True, exist_ok=True)
    fm = write_foundation(work, size)
    protocol = {"rounds": 2, "local_epochs": 1, "bootstrap": 50} if tiny else {}
    base = {"model_size": size, "fm": str(fm), "blocks": "last2", "device": str(device),
            "precision": args.precision, "data": str(work / "synthetic"),
            "cache_dir": str(work / "prefix_cache"), **protocol}
    image_size, _ = model_input_size(TrainConfig.from_dict(base))
    counts = TINY_VENDORS if tiny else PAPER_VENDORS
    frame = synthetic_metadata(counts, seed=0)
    deadline = wall_start + args.budget_seconds - args.stats_reserve
    spec = {"counts": counts, "image_size": list(image_size), "base": base, "work": str(work),
            "deadline": deadline,
            "threads": max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else
            torch.get_num_threads()}
    planned = [(strategy, seed) for seed in seeds for strategy in strategies]
    log(f"synthetic cohort: {len(frame)} subjects at {image_size} on {device}; "
        f"{len(planned)} runs, {jobs} at a time")
    pool = None
    warmup = None
    if jobs > 1:  # spawn: CUDA cannot be forked
        warmup = warm_prefix_cache(spec)  # one disk cache for every worker, written once
        pool = multiprocessing.get_context("spawn").Pool(jobs, worker_init, (spec,))
        answers = pool.map(worker_run, planned, chunksize=1)
    else:
        worker_init(spec)
        answers = [worker_run(task) for task in planned]
    setup = float(min((r["seconds"]["build"] for r in answers if "seconds" in r),
                      default=0.0))
    failed = [r for r in answers if r.get("error")]
    done = [r for r in answers if not r.get("skipped") and not r.get("error")]
    skipped = [r for r in answers if r.get("skipped")]
    paths = [(r["strategy"], r["seed"], work / f"{r['strategy']}-s{r['seed']}") for r in done]
    stats_start = time.perf_counter()
    from duallora.results.compare import results_table

    results_table([path for _, _, path in paths])
    by_key = {(s, seed): path for s, seed, path in paths}
    pairs = [(by_key[(REFERENCE, seed)], path, seed, 50 if tiny else 500)  # 500: as a sweep
             for (strategy, seed), path in by_key.items()
             if strategy != REFERENCE and (REFERENCE, seed) in by_key]
    n_tests = sum(pool.map(paired_test, pairs) if pool else map(paired_test, pairs))
    if pool is not None:
        pool.close()
        pool.join()
    stats_seconds = time.perf_counter() - stats_start
    wall = time.perf_counter() - started
    per_strategy = {}
    for strategy in strategies:
        mine = [r for r in done if r["strategy"] == strategy]
        if mine:
            peaks = [r["peak_gpu_memory_bytes"] for r in mine if r["peak_gpu_memory_bytes"]]
            rates = [r["train_samples_per_second"] for r in mine if r["train_samples_per_second"]]
            per_strategy[strategy] = {
                "runs": len(mine),
                "mean_run_seconds": float(np.mean([r["seconds"]["total"] for r in mine])),
                "mean_train_samples_per_second": float(np.mean(rates)) if rates else None,
                "peak_gpu_memory_bytes": max(peaks) if peaks else None}
    complete_seeds = [seed for seed in seeds
                      if all(any(r["strategy"] == s and r["seed"] == seed for r in done)
                             for s in strategies)]
    stopped = (f"time guard: {len(skipped)} of {len(planned)} runs not started, they would "
               f"have ended past --budget-seconds {args.budget_seconds:.0f}"
               if skipped else None)
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
        "jobs": jobs, "threads_per_job": spec["threads"],
        "strategies": strategies, "seeds_planned": seeds, "seeds_complete": complete_seeds,
        "runs_planned": len(planned), "runs_done": len(done), "stopped": stopped,
        "failed": failed,
        "first_build_seconds": setup, "prefix_warmup_seconds": warmup,
        "statistics_seconds": stats_seconds,
        "paired_tests": n_tests, "wall_seconds": wall,
        "prefix_cache": done[0]["prefix_cache"] if done else None,
        "per_strategy": per_strategy, "runs": done}
    if skipped:
        per_run = {s: v["mean_run_seconds"] for s, v in per_strategy.items()}
        fallback = float(np.mean(list(per_run.values())))
        remaining = sum(per_run.get(r["strategy"], fallback) for r in skipped)
        result["projection"] = {
            "label": "PROJECTION, not measured: the measured wall time plus, for every run "
                     "not started, its strategy's measured mean run time divided by the "
                     f"{jobs} parallel job(s), plus the statistics scaled to every run",
            "all_runs_seconds": wall + remaining / jobs
            + stats_seconds * len(skipped) / max(1, len(done))}
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
    parser.add_argument("--stats-reserve", type=float, default=60.0,
                        help="--paper: seconds kept for the statistics at the end")
    parser.add_argument("--jobs", type=int, default=0,
                        help="--paper: runs at the same time, each its own process sharing the "
                        "GPU (the bootstrap statistics are CPU work; default 6, --cpu-tiny 1)")
    parser.add_argument("--out", default="", help="--paper: keep the run folders here "
                        "(default: a temporary folder, removed)")
