"""The round driver: the one place that decides what happens in a federated run.

Each round: send the global payload to every training site -> local training -> upload ->
aggregate (``rounds``) -> validation of every site's personalized model (and, for strategies
that have one, the global-only model) -> checkpoint. The best round of each site is kept for
the final test (``selection``), which ends the run (``final_test``). The driver talks to the
sites through ``federated.sites.Sites`` only, so the same code runs in this process
(``run_training``) and over Flower (the ServerApp calls ``run_federation`` with
``FlowerSites``), and the two give the same run directory.

``--resume`` loads the checkpoint and replays the remaining rounds; since each client's
randomness is derived from ``(seed, round, client)``, the result is bit-identical to an
uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from duallora.base.config import TrainConfig
from duallora.base.rundir import RunDir
from duallora.federated.client import Predictions
from duallora.federated.client_model import ClientModel, build_client_model
from duallora.federated.final_test import finish
from duallora.federated.head_norm import pooled_head_norm
from duallora.federated.prepare import prepare_cohort
from duallora.federated.rounds import Aggregator, apply_round, round_requests, send_logged
from duallora.federated.selection import (
    SITE_DECIDED_RULES,
    apply_validation,
    final_candidates,
    validation_plan,
)
from duallora.federated.sites import EvalRequest, InProcessSites, Sites
from duallora.federated.state import RunState
from duallora.federated.strategies import Strategy, get_strategy


def run_training(config: TrainConfig, out_dir: Path, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True,
                 after_round: Callable[[int], None] | None = None) -> Path:
    """Train ``config`` in this process into ``out_dir`` (docs/CONTRACTS.md's run directory).

    ``after_round(r)`` is called once round ``r`` is checkpointed (tests use it to crash on
    purpose; notebooks can use it to plot live).
    """
    rundir = RunDir(out_dir)
    if resume and rundir.config.is_file():
        config = rundir.read_config()
    rundir.prepare(resume=resume, overwrite=overwrite)
    strategy = get_strategy(config.strategy, config.head)
    model = build_client_model(config, strategy)
    sites = InProcessSites(config, model, prepare_cohort(config, model))
    rundir.begin(clear=overwrite and not resume)  # the new run is built: now the old may go
    rundir.write_config(config)
    return run_federation(config, strategy, model, sites, rundir, resume=resume,
                          progress=progress, after_round=after_round)


def run_federation(config: TrainConfig, strategy: Strategy, model: ClientModel, sites: Sites,
                   rundir: RunDir, *, resume: bool = False, progress: bool = True,
                   aggregate: Aggregator | None = None,
                   after_round: Callable[[int], None] | None = None) -> Path:
    """Every round of ``config`` with ``sites``, then the final test and export.

    ``model`` is the driver's own copy of the strategy's model: it gives the shared initial
    payload, parameter counts and the export of the global model. ``aggregate`` replaces the
    strategy's weighted mean (the Flower ServerApp's central differential privacy).
    """
    started = time.perf_counter()
    checkpoint = rundir.load_checkpoint() if resume else None
    fresh = checkpoint is None
    state = (RunState(global_payload=model.shared_payload()) if fresh
             else RunState.from_checkpoint(checkpoint))
    # Round 0: pooled statistics for the heads' input standardization; recomputed (the same
    # numbers) on resume, logged in comm.jsonl once.
    if config.head_norm:
        send = (lambda payload, name, direction: send_logged(state, payload, 0, name,
                                                             direction)) if fresh else None
        state.head_norm = pooled_head_norm(strategy, sites.moments(sites.trainers), send)
        sites.set_head_norm(state.head_norm)
    if state.finished:
        return rundir.root
    timing: dict[str, Any] = {"rounds": {}, "transport": sites.transport,
                              "setup_seconds": time.perf_counter() - started}
    bar = tqdm(total=config.rounds * len(sites.trainers),
               initial=state.round * len(sites.trainers), desc=strategy.name, unit="client",
               disable=not progress, leave=False)
    # A transport that carries the validation of round r with the training of round r + 1
    # (same global payload, one message per site) says so; the numbers are the same.
    can = sites.capabilities
    pipelined = can.validates_with_next_round
    pending: tuple[int, dict[str, list[EvalRequest]]] | None = None
    last_close = time.perf_counter()

    def close_round(round_idx: int, plan: dict[str, list[EvalRequest]],
                    answers: dict[str, list[Predictions]]) -> None:
        nonlocal last_close
        apply_validation(round_idx, strategy, sites, state, plan, answers, config.selection)
        state.round = round_idx
        rundir.save_checkpoint(state.to_checkpoint())
        rundir.write_metrics(state.metrics)
        rundir.write_comm(state.comm)
        now = time.perf_counter()
        timing["rounds"][round_idx] = now - last_close
        last_close = now
        bar.update(len(sites.trainers))
        if after_round is not None:
            after_round(round_idx)

    for round_idx in range(state.round + 1, config.rounds + 1):
        requests = round_requests(round_idx, config, strategy, sites, state)
        if pending is not None:
            val_answers, answers = sites.train_after_validation(
                str(pending[0]), pending[1], round_idx, requests.requests)
            close_round(pending[0], pending[1], val_answers)
            pending = None
        else:
            answers = sites.train(round_idx, requests.requests)
        apply_round(round_idx, config, strategy, state, requests, answers, aggregate,
                    sites.trainers)
        plan = validation_plan(strategy, sites, state)
        if pipelined and round_idx < config.rounds:
            pending = (round_idx, plan)
            continue
        if (pipelined and can.validates_with_final_test
                and config.selection in SITE_DECIDED_RULES):
            # the last validation goes with the final test: every model the final test can
            # ask for (see final_candidates), each site deciding its own selection
            kept, last, kept_scores = final_candidates(strategy, sites, state, plan, round_idx)
            close_round(round_idx, plan, sites.validate_then_test(
                str(round_idx), plan, kept, last, kept_scores, config.selection))
            continue
        close_round(round_idx, plan, sites.evaluate(str(round_idx), plan))
    bar.close()
    final_start = time.perf_counter()
    finish(config, strategy, model, sites, state, rundir)
    timing["final_seconds"] = time.perf_counter() - final_start
    timing["total_seconds"] = time.perf_counter() - started
    timing["resumed"] = bool(resume)
    rounds = list(timing["rounds"].values())
    timing["mean_round_seconds"] = float(np.mean(rounds)) if rounds else math.nan
    rundir.write_json(rundir.timing, timing)
    return rundir.root
