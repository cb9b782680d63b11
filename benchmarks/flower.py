"""Flower on localhost vs the in-process loop: the same run, per-round time ratio.

Both runs use the same ``TrainConfig`` on the same cohort: ``duallora.federated.loop`` in this
process, and ``duallora.flower.localhost.run.run_on_localhost`` with one real SuperNode per
vendor on 127.0.0.1. Each writes ``timing.json`` with the wall time of every round (training,
upload, aggregation and validation), which is what is compared. When this checkout has no usable
Flower part, ``measure_flower`` raises ``KitError`` with the reason ("not available").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duallora.errors import KitError

FLOWER_ROUNDS = 3


def flower_runner() -> Callable[..., Any]:
    """``duallora.flower.localhost.run.run_on_localhost``, or KitError saying why it cannot be
    used."""
    try:
        from duallora.flower.localhost.run import run_on_localhost
    except Exception as err:  # not in this checkout yet, or flwr missing
        raise KitError(f"duallora.flower is not importable ({type(err).__name__}: {err})"
                       ) from None
    return run_on_localhost


def round_seconds(run_dir: Path) -> list[float]:
    """Per-round wall times a run directory recorded (``timing.json``), in round order."""
    from duallora.federated.rundir import RunDir
    from duallora.results.run_reader import read_timing

    if not RunDir(run_dir).timing.is_file():
        raise KitError(f"{RunDir(run_dir).timing}: the run left no timing record")
    rounds = read_timing(run_dir).get("rounds", {})
    return [float(v) for _, v in sorted(rounds.items(), key=lambda kv: int(kv[0]))]


def measure_flower(data: Path, work: Path, strategy: str = "med_duallora",
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Quick-mode settings with ``FLOWER_ROUNDS`` rounds, in-process first, then Flower.

    Round 1 is reported apart (it includes each site's start-up: loading its data and building
    its prefix cache); the ratio uses the median of the later rounds.
    """
    from benchmarks.measure import N_CLIENTS, bench_config
    from benchmarks.timing import summarize
    from duallora.federated.config import quick_overrides
    from duallora.federated.loop import run_training

    run_on_localhost = flower_runner()
    values = {**quick_overrides(), "rounds": FLOWER_ROUNDS}
    config = bench_config("tutorial", strategy, data, **values)
    work = Path(work)
    inprocess_cfg = dataclasses.replace(config, cache_dir=str(work / "inprocess-cache"))
    log("flower: in-process run")
    start = time.perf_counter()
    run_training(inprocess_cfg, work / "inprocess", progress=False)
    inprocess_total = time.perf_counter() - start
    log("flower: localhost federation run")
    start = time.perf_counter()
    run_on_localhost(config, work / "flower-run", N_CLIENTS, work_dir=work / "flower-work",
                     timeout=900.0)
    flower_total = time.perf_counter() - start
    ours, theirs = round_seconds(work / "inprocess"), round_seconds(work / "flower-run")
    later_ours, later_theirs = summarize(ours[1:] or ours), summarize(theirs[1:] or theirs)
    return {"available": True, "strategy": strategy, "rounds": FLOWER_ROUNDS,
            "n_clients": N_CLIENTS,
            "round_seconds_inprocess": later_ours.to_dict(),
            "round_seconds_flower": later_theirs.to_dict(),
            "first_round_seconds": {"inprocess": ours[0], "flower": theirs[0]},
            "total_seconds": {"inprocess": inprocess_total, "flower": flower_total},
            "ratio": later_theirs.median / later_ours.median}
