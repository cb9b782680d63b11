"""The in-process federated run: rounds of send -> local training -> upload -> aggregate.

Every client runs in this process, one after the other, through exactly the functions a Flower
client would call (``client.train_client`` / ``client.evaluate_client``), and every message goes
through ``serialization.encode``/``decode`` so ``comm.jsonl`` records real message sizes.

After each round the loop evaluates every client's personalized model (and, for strategies that
have one, the global-only model) on the validation splits, keeps the best round of each for the
final test (model selection), and writes an atomic checkpoint holding all state. ``--resume``
loads it and replays the remaining rounds; since each client's randomness is derived from
``(seed, round, client)``, the result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from duallora.federated.client import Predictions, evaluate_client, train_client
from duallora.federated.client_model import ClientModel, build_client_model
from duallora.federated.cohort import ClientData
from duallora.federated.config import TrainConfig
from duallora.federated.export import export_final_models
from duallora.federated.head_norm import setup_head_norm
from duallora.federated.prepare import FederatedCohort, prepare_cohort
from duallora.federated.rundir import RunDir
from duallora.federated.serialization import Payload, decode, encode
from duallora.federated.strategies import Strategy, get_strategy
from duallora.results.evaluation import prediction_rows, summary_rows
from duallora.results.metrics import binary_metrics

VAL_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc")


def run_training(config: TrainConfig, out_dir: Path, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True,
                 after_round: Callable[[int], None] | None = None) -> Path:
    """Train ``config`` into ``out_dir`` (the run directory of DESIGN.md); returns the folder.

    ``after_round(r)`` is called once round ``r`` is checkpointed (tests use it to crash on
    purpose; notebooks can use it to plot live).
    """
    rundir = RunDir(out_dir)
    if resume and rundir.config.is_file():
        config = rundir.read_config()
    config.validate()
    rundir.prepare(resume=resume, overwrite=overwrite)
    strategy = get_strategy(config.strategy, config.head)
    model = build_client_model(config, strategy)
    cohort = prepare_cohort(config, model)
    rundir.write_config(config)
    state = rundir.load_checkpoint() if resume else None
    fresh = state is None
    if state is None:
        state = initial_state(model, cohort)
    # Round 0: pooled statistics for the heads' input standardization (recomputed, identically,
    # on resume; logged once).
    def send_round0(payload: Payload, name: str, direction: str) -> Payload:
        return send_logged(state, payload, 0, name, direction)

    state["head_norm"] = setup_head_norm(config, strategy, model, cohort,
                                         send=send_round0 if fresh else None)
    if state.get("finished"):
        return rundir.root
    started = time.perf_counter()
    timing: dict[str, Any] = {"rounds": {}}
    clients = sorted(cohort.train_clients)
    bar = tqdm(total=config.rounds * len(clients), initial=state["round"] * len(clients),
               desc=f"{strategy.name}", unit="client", disable=not progress, leave=False)
    for round_idx in range(state["round"] + 1, config.rounds + 1):
        round_start = time.perf_counter()
        run_round(round_idx, config, strategy, model, cohort, state, bar)
        validate_round(round_idx, config, strategy, model, cohort, state)
        state["round"] = round_idx
        rundir.save_checkpoint(state)
        rundir.write_metrics(state["metrics"])
        rundir.write_comm(state["comm"])
        timing["rounds"][round_idx] = time.perf_counter() - round_start
        if after_round is not None:
            after_round(round_idx)
    bar.close()
    final_start = time.perf_counter()
    finish(config, strategy, model, cohort, state, rundir)
    timing["final_seconds"] = time.perf_counter() - final_start
    timing["total_seconds"] = time.perf_counter() - started
    timing["resumed"] = bool(resume)
    rundir.write_json(rundir.timing, timing)
    return rundir.root


def initial_state(model: ClientModel, cohort: FederatedCohort) -> dict[str, Any]:
    """Round 0: the shared init as global payload, no private state, nothing selected yet."""
    return {"round": 0, "global": model.shared_payload(), "private": {}, "best": {},
            "best_global": None, "metrics": [], "comm": [], "events": [], "finished": False}


def _metric(state: dict[str, Any], round_idx: int, client: str, split: str, metric: str,
            value: float) -> None:
    state["metrics"].append({"round": round_idx, "client": client, "split": split,
                             "metric": metric, "value": float(value)})


def send_logged(state: dict[str, Any], payload: Payload, round_idx: int, client: str,
          direction: str) -> Payload:
    """Serialize, log the message size, and hand back what the receiver decodes."""
    blob = encode(payload)
    state["comm"].append({"round": round_idx, "client": client, "direction": direction,
                          "keys": sorted(payload), "bytes": len(blob)})
    return decode(blob)


def dropped_clients(config: TrainConfig, round_idx: int, clients: list[str]) -> set[str]:
    """Clients that miss ``round_idx`` (``--drop-prob``), drawn from ``(seed, round)`` only."""
    if config.drop_prob <= 0:
        return set()
    rng = np.random.default_rng([config.seed, round_idx, 1])
    draws = rng.random(len(clients))
    return {name for name, draw in zip(clients, draws, strict=True) if draw < config.drop_prob}


def run_round(round_idx: int, config: TrainConfig, strategy: Strategy, model: ClientModel,
              cohort: FederatedCohort, state: dict[str, Any], bar: tqdm,
              train: Callable[..., Any] | None = None) -> None:
    """One round of training; updates ``state`` (global payload, private states, logs).

    ``train`` has ``train_client``'s signature; the Flower ServerApp passes one that returns
    the update a site computed remotely (its ``private`` is then a reference, not tensors).
    """
    train = train or train_client  # looked up at call time (tests patch ``train_client``)
    clients = sorted(cohort.train_clients)
    dropped = dropped_clients(config, round_idx, clients) if strategy.federated else set()
    results: dict[str, tuple[Payload, Any]] = {}
    for name in clients:
        bar.set_postfix_str(f"round {round_idx} {name}")
        bar.update(1)
        if name in dropped:
            state["events"].append({"round": round_idx, "client": name, "event": "dropped"})
            _metric(state, round_idx, name, "train", "dropped", 1)
            continue
        received = (send_logged(state, state["global"], round_idx, name, "down")
                    if strategy.federated else state["global"])
        try:
            update = train(model, received, state["private"].get(name),
                                  cohort.train_clients[name], config, round_idx)
        except Exception as err:  # a failing site must not stop the federation
            state["events"].append({"round": round_idx, "client": name, "event": "failed",
                                    "error": f"{type(err).__name__}: {err}"})
            _metric(state, round_idx, name, "train", "failed", 1)
            continue
        upload = (send_logged(state, update.upload, round_idx, name, "up")
                  if strategy.federated else update.upload)
        results[name] = (upload, update)
        _metric(state, round_idx, name, "train", "loss", update.metrics["loss"])
        _metric(state, round_idx, name, "train", "n_examples", update.n_examples)
    _log_round_bytes(state, round_idx)
    needed = min(config.min_clients, len(clients)) if strategy.federated else 1
    if strategy.federated and len(results) < needed:
        state["events"].append({"round": round_idx, "client": "server", "event": "skipped",
                                "reason": f"{len(results)} of {needed} required clients"})
        _metric(state, round_idx, "server", "train", "round_skipped", 1)
        return
    if strategy.federated or strategy.pooled:
        uploads = [(upload, update.n_examples) for upload, update in results.values()]
        if uploads:
            state["global"] = strategy.aggregate(uploads)
        _metric(state, round_idx, "server", "train", "clients_aggregated", len(uploads))
    for name, (_, update) in results.items():
        state["private"][name] = update.private


def _log_round_bytes(state: dict[str, Any], round_idx: int) -> None:
    for direction in ("up", "down"):
        total = sum(m["bytes"] for m in state["comm"]
                    if m["round"] == round_idx and m["direction"] == direction)
        _metric(state, round_idx, "server", "comm", f"bytes_{direction}", total)


def _score(predictions: Predictions) -> float:
    return binary_metrics(predictions.labels, predictions.probs)["balanced_accuracy"]


def _better(score: float, best: dict[str, Any] | None) -> bool:
    """Strictly better validation score (an undefined score keeps the latest round)."""
    if best is None or math.isnan(score) or math.isnan(best["score"]):
        return True
    return score > best["score"]


def validate_round(round_idx: int, config: TrainConfig, strategy: Strategy, model: ClientModel,
                   cohort: FederatedCohort, state: dict[str, Any],
                   evaluate: Callable[..., Predictions] | None = None) -> None:
    """Validation metrics of this round's models; remember each client's best round.

    ``evaluate`` has ``evaluate_client``'s signature (the Flower ServerApp asks the sites).
    """
    evaluate = evaluate or evaluate_client
    global_scores, global_weights = [], []
    scores: dict[str, float] = {}
    for name in sorted(cohort.train_clients):
        data = cohort.train_clients[name]
        if name not in state["private"] and strategy.private:
            continue  # never trained successfully: nothing personal to evaluate yet
        private = state["private"].get(name)
        preds = evaluate(model, state["global"], private, data, "val", config)
        _log_val(state, round_idx, name, "val", preds)
        score = scores[name] = _score(preds)
        if _better(score, state["best"].get(name)):
            state["best"][name] = {"round": round_idx, "score": score,
                                   "received": state["global"], "private": private}
        if strategy.has_global_model and strategy.federated:
            global_preds = evaluate(model, state["global"], None, data, "val", config,
                                           global_only=True)
            _log_val(state, round_idx, name, "val_global", global_preds)
            global_scores.append(_score(global_preds))
            global_weights.append(len(global_preds.labels))
    if strategy.has_global_model:
        if strategy.federated:
            finite = [(s, w) for s, w in zip(global_scores, global_weights, strict=True)
                      if not math.isnan(s)]
            score = (sum(s * w for s, w in finite) / sum(w for _, w in finite)
                     if finite else math.nan)
        else:
            score = scores.get("pooled", math.nan)  # centralized: its one model is global
        _metric(state, round_idx, "server", "val_global", "weighted_balanced_accuracy", score)
        if _better(score, state["best_global"]):
            state["best_global"] = {"round": round_idx, "score": score,
                                    "payload": state["global"]}


def _log_val(state: dict[str, Any], round_idx: int, client: str, split: str,
             preds: Predictions) -> None:
    values = binary_metrics(preds.labels, preds.probs)
    for metric in VAL_METRICS:
        _metric(state, round_idx, client, split, metric, values[metric])


def finish(config: TrainConfig, strategy: Strategy, model: ClientModel, cohort: FederatedCohort,
           state: dict[str, Any], rundir: RunDir,
           evaluate: Callable[..., Predictions] | None = None,
           export: Callable[[Path, ClientModel, dict[str, Any]], None] | None = None,
           ) -> None:
    """Final test predictions with the selected models, summary metrics, exported adapters.

    ``evaluate`` / ``export`` are replaced by the Flower ServerApp (sites evaluate and export
    their private parts themselves).
    """
    evaluate = evaluate or evaluate_client
    export = export or export_final_models
    rows: list[dict[str, Any]] = []
    for vendor in sorted(cohort.vendors):
        owner = "pooled" if strategy.pooled else vendor
        best = state["best"].get(owner)
        if best is not None:
            preds = evaluate(model, best["received"], best["private"],
                             cohort.vendors[vendor], "test", config)
            rows += _prediction_rows(preds, vendor, "test")
    best_global = state["best_global"]
    if strategy.has_global_model and best_global is not None:
        targets: list[tuple[ClientData, str]] = [(cohort.vendors[v], "test_global")
                                                 for v in sorted(cohort.vendors)]
        if cohort.holdout is not None:
            targets.append((cohort.holdout, "holdout"))
        for data, split in targets:
            preds = evaluate(model, best_global["payload"], None, data, "test", config,
                             global_only=True)
            rows += _prediction_rows(preds, data.name, split)
    rundir.write_predictions(rows)
    frame = pd.DataFrame(rows)
    if len(frame):
        state["metrics"] += summary_rows(frame, config.rounds, config.bootstrap, config.seed)
    _cost_rows(config, strategy, model, state)
    export(rundir.final, model, state)
    state["finished"] = True
    rundir.write_metrics(state["metrics"])
    rundir.write_comm(state["comm"])
    rundir.write_json(rundir.root / "events.json", state["events"])
    rundir.save_checkpoint(state)


def _prediction_rows(preds: Predictions, client: str, split: str) -> list[dict[str, Any]]:
    return prediction_rows(preds.subject_ids, client, split, preds.labels, preds.probs)


def _cost_rows(config: TrainConfig, strategy: Strategy, model: ClientModel,
               state: dict[str, Any]) -> None:
    """Parameter counts and bytes, per round (mean) and in total."""
    final = config.rounds
    _metric(state, final, "server", "cost", "trainable_params", model.count(model.trainable_names))
    _metric(state, final, "server", "cost", "shared_params", model.count(model.shared_names))
    _metric(state, final, "server", "cost", "private_params", model.count(model.private_names))
    for direction in ("up", "down"):
        total = sum(m["bytes"] for m in state["comm"] if m["direction"] == direction)
        _metric(state, final, "server", "cost", f"bytes_{direction}_total", total)
        _metric(state, final, "server", "cost", f"bytes_{direction}_per_round", total / final)
