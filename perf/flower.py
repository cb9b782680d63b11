"""Flower on localhost vs Flower's own floor vs the in-process loop, per-round times.

Three runs, side by side: the kit's training in this process (``duallora.federated.loop``),
the same ``TrainConfig`` over ``duallora.flower.localhost.run.run_on_localhost`` (one real
SuperNode and site worker per vendor on 127.0.0.1), and a trivial Flower app
(``perf/flower_floor``: no torch, no computation) on the same topology with the same
message count per round (one per site). The kit's runs write ``timing.json`` with the wall
time of every round (training, upload, aggregation and validation); the trivial app writes its
own. The target is ``ratio_to_floor`` <= 1.25. When this checkout has no usable Flower part,
``measure_flower`` raises ``KitError`` with the reason ("not available").

    python perf/run.py --skip data strategies prefix inference notebooks   # this alone
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duallora.errors import KitError

# rounds 2 .. FLOWER_ROUNDS - 1 are the steady rounds the ratios use (six of them: the
# floor moves by a second or more from round to round, with the SuperNodes' poll timing)
FLOWER_ROUNDS = 8
FLOOR_APP = Path(__file__).resolve().parent / "flower_floor"


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
    from duallora.base.rundir import RunDir
    from duallora.results.run_reader import read_timing

    if not RunDir(run_dir).timing.is_file():
        raise KitError(f"{RunDir(run_dir).timing}: the run left no timing record")
    rounds = read_timing(run_dir).get("rounds", {})
    return [float(v) for _, v in sorted(rounds.items(), key=lambda kv: int(kv[0]))]


def measure_floor(work: Path, n_sites: int, rounds: int) -> list[float]:
    """Round times of the trivial app (one message per site per round) on ``n_sites``
    SuperNodes, with the launcher the kit's runs use."""
    import json

    from duallora.flower.localhost.launcher import LocalhostFederation, NodeSpec

    out = Path(work) / "floor-rounds.json"
    nodes = [NodeSpec(f"site{i}", {"partition-id": i}) for i in range(n_sites)]
    with LocalhostFederation(Path(work) / "floor", nodes, workers=False) as federation:
        federation.run_app(FLOOR_APP, {"rounds": rounds, "num-sites": n_sites,
                                       "messages-per-round": 1, "out-file": str(out)},
                           timeout=600.0)
    rounds_done = json.loads(out.read_text())["rounds"]
    return [float(v) for _, v in sorted(rounds_done.items(), key=lambda kv: int(kv[0]))]


def measure_flower(data: Path, work: Path, strategy: str = "med_duallora",
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Quick-mode settings with ``FLOWER_ROUNDS`` rounds: in-process, then Flower, then the
    trivial app.

    A run's round r is the interval between the close of round r - 1 and its own close (its
    validation applied). The validation of round r travels with the training of round r + 1,
    so round 1's interval holds two messages per site (and each site's start-up: loading its
    data, building its prefix cache), rounds 2 .. R - 1 one message per site each (a training
    and the validation before it: the steady rounds), and the last round's one message per
    site also carries the final test under the default selection rule (its predictions,
    exports and fine-tuning, which the trivial app has no counterpart for). The ratios use
    the median of the steady rounds; the first and the last round are reported apart.
    """
    from duallora.base.config import quick_overrides
    from duallora.federated.loop import run_training
    from perf.measure import N_CLIENTS, bench_config
    from perf.timing import summarize

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
    log("flower: trivial app on the same topology")
    floor = measure_floor(work / "floor-work", N_CLIENTS, FLOWER_ROUNDS)
    ours, theirs = round_seconds(work / "inprocess"), round_seconds(work / "flower-run")
    later_ours, later_theirs = summarize(ours[1:-1]), summarize(theirs[1:-1])
    floor_timing = summarize(floor)
    return {"available": True, "strategy": strategy, "rounds": FLOWER_ROUNDS,
            "n_clients": N_CLIENTS, "messages_per_site_per_round": 1,
            "round_seconds_inprocess": later_ours.to_dict(),
            "round_seconds_flower": later_theirs.to_dict(),
            "round_seconds_floor": floor_timing.to_dict(),
            "first_round_seconds": {"inprocess": ours[0], "flower": theirs[0]},
            "last_round_seconds": {"inprocess": ours[-1], "flower": theirs[-1]},
            "total_seconds": {"inprocess": inprocess_total, "flower": flower_total},
            "ratio": later_theirs.median / later_ours.median,
            "ratio_to_floor": later_theirs.median / floor_timing.median}

