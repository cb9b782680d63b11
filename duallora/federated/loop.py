"""The round driver: the one place that decides what happens in a federated run.

Each round: send the global payload to every training site -> local training -> upload ->
aggregate -> validation of every site's personalized model (and, for strategies that have one,
the global-only model) -> checkpoint. The best round of each site is kept for the final test
(model selection). The driver talks to the sites through ``federated.sites.Sites`` only, so
the same code runs in this process (``run_training``) and over Flower (the ServerApp calls
``run_federation`` with ``FlowerSites``), and the two give the same run directory.

Every message goes through ``serialization.encode``/``decode`` here, so ``comm.jsonl`` records
real message sizes whatever the transport. ``--resume`` loads the checkpoint and replays the
remaining rounds; since each client's randomness is derived from ``(seed, round, client)``, the
result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from duallora.base.config import TrainConfig
from duallora.base.rundir import RunDir
from duallora.errors import KitError
from duallora.federated.client import Predictions, training_phases
from duallora.federated.client_model import ClientModel, build_client_model
from duallora.federated.fedalt import rest_of_world
from duallora.federated.flops import train_flops_per_subject
from duallora.federated.head_norm import pooled_head_norm
from duallora.federated.prepare import prepare_cohort
from duallora.federated.serialization import Payload, decode, encode
from duallora.federated.sites import EvalRequest, InProcessSites, Sites, TrainRequest
from duallora.federated.state import RunState, SelectedRound
from duallora.federated.strategies import LEAVE_ONE_OUT, Strategy, get_strategy
from duallora.results.evaluation import prediction_rows, summary_rows
from duallora.results.metrics import binary_metrics

VAL_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc")
# predictions.csv splits, in file order: each site's personalized model (after aggregation),
# the global model on every vendor, on the hold-out, and (strategies with private parts) the
# personalized model as the site trained it, before the server averaged the shared part
FINAL_SPLITS = ("test", "test_global", "holdout", "test_before_aggregation")
# (round, uploads) -> the new global payload; default: the strategy's weighted mean
Aggregator = Callable[[int, Sequence[tuple[Payload, int]]], Payload]
# selection rules under which a site can tell alone whether its last round replaces its
# selected model (its own validation score against the selection's): a pipelining transport
# then sends the last validation and the final test as one message (``validate_then_test``)
SITE_DECIDED_RULES = ("site-val-ba", "final")


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
    pipelined = bool(getattr(sites, "validates_with_next_round", False))
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
        if (pipelined and config.selection in SITE_DECIDED_RULES
                and hasattr(sites, "validate_then_test")):
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


def send_logged(state: RunState, payload: Payload, round_idx: int, client: str,
                direction: str) -> Payload:
    """Serialize, log the message size, and hand back what the receiver decodes."""
    blob = encode(payload)
    state.comm.append({"round": round_idx, "client": client, "direction": direction,
                       "keys": sorted(payload), "bytes": len(blob)})
    return decode(blob)


def dropped_clients(config: TrainConfig, round_idx: int, clients: list[str]) -> set[str]:
    """Clients that miss ``round_idx`` (``--drop-prob``), drawn from ``(seed, round)`` only."""
    if config.drop_prob <= 0:
        return set()
    rng = np.random.default_rng([config.seed, round_idx, 1])
    draws = rng.random(len(clients))
    return {name for name, draw in zip(clients, draws, strict=True) if draw < config.drop_prob}


@dataclass
class RoundRequests:
    """What the driver asks of the sites in one round: the train requests, the download
    records (logged next to each site's upload) and the sites that miss the round."""

    requests: dict[str, TrainRequest]
    downloads: dict[str, dict[str, Any]]
    dropped: set[str]


def round_requests(round_idx: int, config: TrainConfig, strategy: Strategy, sites: Sites,
                   state: RunState) -> RoundRequests:
    """This round's train requests, from the current global payload and private handles
    (``state`` is left as it was)."""
    clients = sites.trainers
    dropped = dropped_clients(config, round_idx, clients) if strategy.federated else set()
    downloads: dict[str, dict[str, Any]] = {}
    requests: dict[str, TrainRequest] = {}
    for name in clients:
        if name in dropped:
            continue
        received = received_payload(strategy, state, name)
        if strategy.federated:  # logged below in site order, next to each site's upload
            received = send_logged(state, received, round_idx, name, "down")
            downloads[name] = state.comm.pop()
        requests[name] = TrainRequest(received, state.private.get(name))
    return RoundRequests(requests, downloads, dropped)


def received_payload(strategy: Strategy, state: RunState, client: str) -> Payload:
    """What the server sends ``client`` now: the global payload, or under leave-one-out
    aggregation (FedALT) the mean of the other clients' latest uploads (``fedalt``)."""
    if strategy.aggregation == LEAVE_ONE_OUT:
        return rest_of_world(state.uploads, client, state.global_payload)
    return state.global_payload


def own_upload(strategy: Strategy, state: RunState, client: str) -> Payload | None:
    """The client's latest upload, for the test of its model before aggregation (None where
    the server sends back no mean of it: leave-one-out keeps the client's own adapter)."""
    return None if strategy.aggregation == LEAVE_ONE_OUT else state.uploads.get(client)


def run_round(round_idx: int, config: TrainConfig, strategy: Strategy, sites: Sites,
              state: RunState, aggregate: Aggregator | None = None) -> None:
    """One round of training; updates ``state`` (global payload, private handles, logs)."""
    requests = round_requests(round_idx, config, strategy, sites, state)
    answers = sites.train(round_idx, requests.requests)
    apply_round(round_idx, config, strategy, state, requests, answers, aggregate, sites.trainers)


def apply_round(round_idx: int, config: TrainConfig, strategy: Strategy, state: RunState,
                asked: RoundRequests, answers: dict[str, Any],
                aggregate: Aggregator | None = None,
                clients: list[str] | None = None) -> None:
    """Log the sites' answers to ``asked`` and aggregate them into ``state``."""
    clients = sorted(set(asked.requests) | asked.dropped) if clients is None else clients
    dropped, downloads = asked.dropped, asked.downloads
    results: dict[str, tuple[Payload, Any]] = {}
    for name in clients:
        if name in dropped:
            state.event(round_idx, name, "dropped")
            state.metric(round_idx, name, "train", "dropped", 1)
            continue
        if name in downloads:
            state.comm.append(downloads[name])
        answer = answers[name]
        if isinstance(answer, Exception):
            state.event(round_idx, name, "failed", error=f"{type(answer).__name__}: {answer}")
            state.metric(round_idx, name, "train", "failed", 1)
            continue
        upload = (send_logged(state, answer.upload, round_idx, name, "up")
                  if strategy.federated else answer.upload)
        results[name] = (upload, answer)
        if strategy.federated and strategy.private and strategy.aggregation != LEAVE_ONE_OUT:
            # for the before-aggregation test
            state.uploads[name] = upload
        state.metric(round_idx, name, "train", "loss", answer.metrics["loss"])
        state.metric(round_idx, name, "train", "n_examples", answer.n_examples)
        state.metric(round_idx, name, "train", "steps", answer.metrics["steps"])
    _log_round_bytes(state, round_idx)
    needed = min(config.min_clients, len(clients)) if strategy.federated else 1
    if strategy.federated and len(results) < needed:
        state.event(round_idx, "server", "skipped",
                    reason=f"{len(results)} of {needed} required clients")
        state.metric(round_idx, "server", "train", "round_skipped", 1)
        return
    if strategy.federated or strategy.pooled:
        uploads = [(upload, update.n_examples) for upload, update in results.values()]
        if uploads and strategy.aggregation == LEAVE_ONE_OUT:
            if aggregate is not None:
                raise KitError(f"{strategy.name}: the server sends each site its own mean; "
                               "a replacement aggregator (central DP) is not supported")
            state.uploads.update({name: upload for name, (upload, _) in results.items()})
        elif uploads:
            state.global_payload = (aggregate(round_idx, uploads) if aggregate is not None
                                    else strategy.aggregate(uploads))
            _log_privacy(state, round_idx, aggregate)
        state.metric(round_idx, "server", "train", "clients_aggregated", len(uploads))
    for name, (_, update) in results.items():
        state.private[name] = update.private


def _log_privacy(state: RunState, round_idx: int, aggregate: Aggregator | None) -> None:
    """An aggregator that spends a privacy budget (central DP) reports it per round: rows of
    split ``privacy`` (``releases`` counts the noisy aggregates so far, this one included)."""
    report = getattr(aggregate, "round_metrics", None)
    if report is None:
        return
    releases = 1 + sum(1 for m in state.metrics if m["metric"] == "clients_aggregated"
                       and m["client"] == "server" and m["value"] > 0)
    for metric, value in report(releases).items():
        state.metric(round_idx, "server", "privacy", metric, value)


def _log_round_bytes(state: RunState, round_idx: int) -> None:
    for direction in ("up", "down"):
        total = sum(m["bytes"] for m in state.comm
                    if m["round"] == round_idx and m["direction"] == direction)
        state.metric(round_idx, "server", "comm", f"bytes_{direction}", total)


def _score(predictions: Predictions) -> float:
    return binary_metrics(predictions.labels, predictions.probs)["balanced_accuracy"]


def log_loss(predictions: list[Predictions]) -> float:
    """Mean binary cross-entropy of P(disease) over every subject of ``predictions``."""
    labels = np.concatenate([p.labels for p in predictions]).astype(np.float64)
    probs = np.clip(np.concatenate([p.probs for p in predictions]).astype(np.float64),
                    1e-7, 1 - 1e-7)
    if not len(labels):
        return math.nan
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))


def last_round_replaces(score: float, kept_score: float | None, rule: str) -> bool:
    """Whether a round scoring ``score`` replaces a selection scoring ``kept_score`` (None:
    nothing selected yet) under a ``SITE_DECIDED_RULES`` rule: ``apply_validation``'s own
    decision for a site's personalized model, for a site that takes it by itself."""
    if rule not in SITE_DECIDED_RULES:
        raise ValueError(f"selection {rule!r} is not decided by each site alone")
    kept = None if kept_score is None else SelectedRound(0, kept_score, None)
    return _better(score, kept, rule)


def selection_score(predictions: Predictions) -> float:
    """The score ``site-val-ba`` selects a site's personalized model by (validation BA)."""
    return _score(predictions)


def final_candidates(strategy: Strategy, sites: Sites, state: RunState,
                     plan: dict[str, list[EvalRequest]], round_idx: int
                     ) -> tuple[dict[str, list[tuple[str, EvalRequest]]],
                                dict[str, list[tuple[str, EvalRequest]]], dict[str, float | None]]:
    """The two final plans the last validation (``plan``) can lead to, before it is known:
    ``kept`` (no selection moves to this round) and ``last`` (every selection does), and each
    site's selected score so far (None: nothing selected yet).

    The actual final plan mixes them: each site's personalized model comes from one of the
    two (the site's own decision, ``last_round_replaces``), the global model from one of the
    two (a decision over all sites, so a transport asks for both)."""
    best = dict(state.best)
    for name, items in plan.items():  # what apply_validation selects when this round wins
        best[name] = SelectedRound(round_idx, math.nan, items[0].received, items[0].private,
                                   own_upload(strategy, state, name))
    best_global = (SelectedRound(round_idx, math.nan, state.global_payload)
                   if strategy.has_global_model else state.best_global)
    if_last = dataclasses.replace(state, best=best, best_global=best_global)
    kept_scores = {name: (state.best[name].score if name in state.best else None)
                   for name in plan}
    return final_plan(strategy, sites, state), final_plan(strategy, sites, if_last), kept_scores


def _better(score: float, best: SelectedRound | None, rule: str = "site-val-ba") -> bool:
    """Whether this round replaces the selected one: always under ``final``; otherwise a
    strictly higher score (an undefined score keeps the latest round)."""
    if rule == "final" or best is None or math.isnan(score) or math.isnan(best.score):
        return True
    return score > best.score


def validate_round(round_idx: int, strategy: Strategy, sites: Sites, state: RunState,
                   rule: str = "site-val-ba") -> None:
    """Validation metrics of this round's models; remember the selected round (``rule``).

    ``site-val-ba``: each site keeps its own best round by its validation balanced accuracy
    (the global model: by the size-weighted mean over sites). ``final``: the last round.
    ``pooled-val-loss``: one round for every site, the lowest log loss over all sites'
    validation subjects (the personalized models; the global model by its own pooled loss),
    the same rule for federated and centralized runs.
    """
    plan = validation_plan(strategy, sites, state)
    apply_validation(round_idx, strategy, sites, state, plan,
                     sites.evaluate(str(round_idx), plan), rule)


def validation_plan(strategy: Strategy, sites: Sites, state: RunState
                    ) -> dict[str, list[EvalRequest]]:
    """Each site's validation requests for the models of ``state``'s last round."""
    plan: dict[str, list[EvalRequest]] = {}
    for name in sites.trainers:
        if name not in state.private and strategy.private:
            continue  # never trained successfully: nothing personal to evaluate yet
        plan[name] = [EvalRequest("val", received_payload(strategy, state, name),
                                  state.private.get(name))]
        if strategy.has_global_model and strategy.federated:
            plan[name].append(EvalRequest("val", state.global_payload, None, global_only=True))
    return plan


def apply_validation(round_idx: int, strategy: Strategy, sites: Sites, state: RunState,
                     plan: dict[str, list[EvalRequest]],
                     answers: dict[str, list[Predictions]],
                     rule: str = "site-val-ba") -> None:
    """Log the validation ``answers`` to ``plan`` and update the selection. A site without an
    answer (a transport's site that stayed away) keeps its selection; the event is logged."""
    for name in [name for name in plan if name not in answers]:
        state.event(round_idx, name, "absent", split="val")
        plan = {key: items for key, items in plan.items() if key != name}
    personal = [answers[name][0] for name in plan]
    pooled_score = -log_loss(personal) if personal else math.nan
    state.metric(round_idx, "server", "val", "pooled_log_loss", -pooled_score)
    global_scores, global_weights, global_preds_all = [], [], []
    scores: dict[str, float] = {}
    for name, items in plan.items():
        preds = answers[name][0]
        _log_val(state, round_idx, name, "val", preds)
        score = scores[name] = _score(preds)
        if rule == "pooled-val-loss":
            score = pooled_score
        if _better(score, state.best.get(name), rule):
            state.best[name] = SelectedRound(round_idx, score, items[0].received,
                                             items[0].private, own_upload(strategy, state, name))
        if len(items) > 1:
            global_preds = answers[name][1]
            _log_val(state, round_idx, name, "val_global", global_preds)
            global_scores.append(_score(global_preds))
            global_weights.append(len(global_preds.labels))
            global_preds_all.append(global_preds)
    if strategy.has_global_model:
        if strategy.federated:
            finite = [(s, w) for s, w in zip(global_scores, global_weights, strict=True)
                      if not math.isnan(s)]
            score = (sum(s * w for s, w in finite) / sum(w for _, w in finite)
                     if finite else math.nan)
            global_loss = log_loss(global_preds_all) if global_preds_all else math.nan
        else:
            score = scores.get("pooled", math.nan)  # centralized: its one model is global
            global_loss = -pooled_score
        state.metric(round_idx, "server", "val_global", "weighted_balanced_accuracy", score)
        state.metric(round_idx, "server", "val_global", "pooled_log_loss", global_loss)
        if rule == "pooled-val-loss":
            score = -global_loss
        if _better(score, state.best_global, rule):
            state.best_global = SelectedRound(round_idx, score, state.global_payload)


def _log_val(state: RunState, round_idx: int, client: str, split: str,
             preds: Predictions) -> None:
    values = binary_metrics(preds.labels, preds.probs)
    for metric in VAL_METRICS:
        state.metric(round_idx, client, split, metric, values[metric])


def final_plan(strategy: Strategy, sites: Sites, state: RunState
               ) -> dict[str, list[tuple[str, EvalRequest]]]:
    """The final test requests, by site, each with the predictions.csv split it fills
    (``FINAL_SPLITS``): each vendor's selected personal model (its export; under a
    ``finetune`` strategy the selected round's global payload fine-tuned on the site, while
    selection itself scored the un-fine-tuned model) and, for strategies with private parts,
    the same model before aggregation; the selected global model on every vendor and the
    hold-out."""
    plan: dict[str, list[tuple[str, EvalRequest]]] = {}
    for vendor in sites.vendors:
        best = state.best.get("pooled" if strategy.pooled else vendor)
        if best is not None:
            plan.setdefault(vendor, []).append(
                ("test", EvalRequest("test", best.received, best.private, export=True,
                                     finetune=strategy.finetune)))
            if best.own_upload is not None:  # the same site's model before aggregation
                plan[vendor].append(("test_before_aggregation",
                                     EvalRequest("test", best.own_upload, best.private)))
    if strategy.has_global_model and state.best_global is not None:
        targets = [(vendor, "test_global") for vendor in sites.vendors]
        if sites.holdout is not None:
            targets.append((sites.holdout, "holdout"))
        for name, split in targets:
            plan.setdefault(name, []).append(
                (split, EvalRequest("test", state.best_global.received, None, global_only=True)))
    return plan


def finish(config: TrainConfig, strategy: Strategy, model: ClientModel, sites: Sites,
           state: RunState, rundir: RunDir) -> None:
    """Final test predictions with the selected models, summary metrics, exported adapters."""
    plan = final_plan(strategy, sites, state)
    answers = sites.evaluate("final", {name: [item for _, item in items]
                                       for name, items in plan.items()})
    by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in FINAL_SPLITS}
    for name in sorted(plan, key=_final_order(sites)):
        if name not in answers:  # a site that stayed away from the final test
            state.event(state.round, name, "absent", split="test")
            continue
        for (split, _), preds in zip(plan[name], answers[name], strict=True):
            by_split[split] += prediction_rows(preds.subject_ids, name, split, preds.labels,
                                               preds.probs)
    rows = [row for split in FINAL_SPLITS for row in by_split[split]]
    frame = pd.DataFrame(rows)
    if config.cross_site:
        rows += cross_site_rows(strategy, sites, state)
    rundir.write_predictions(rows)
    if len(frame):
        state.metrics += summary_rows(frame, config.rounds, config.bootstrap, config.seed)
    _cost_rows(config, model, state)
    sites.export(rundir.final, state)
    state.finished = True
    rundir.write_metrics(state.metrics)
    rundir.write_comm(state.comm)
    rundir.write_json(rundir.root / "events.json", state.events)
    rundir.save_checkpoint(state.to_checkpoint())


def cross_site_rows(strategy: Strategy, sites: Sites, state: RunState
                    ) -> list[dict[str, Any]]:
    """Each site's selected personalized model on every *other* vendor's test split and on
    the hold-out (predictions.csv split ``cross_site:<owner>``, client = where it was tested).

    Only for strategies with private parts (otherwise the personalized model is the global
    one, already in ``test_global``); the diagonal is the ``test`` split. The summary metrics
    leave these rows out: the benchmark reads them from predictions.csv.
    """
    if strategy.pooled or not strategy.private:
        return []
    targets = [*sites.vendors, *([sites.holdout] if sites.holdout else [])]
    owners = [v for v in sites.vendors if v in state.best]
    plan = {target: [(owner, EvalRequest("test", state.best[owner].received,
                                         state.best[owner].private, norm_of=owner))
                     for owner in owners if owner != target] for target in targets}
    plan = {target: items for target, items in plan.items() if items}
    answers = sites.evaluate("cross-site", {t: [r for _, r in items] for t, items in plan.items()})
    rows: list[dict[str, Any]] = []
    for target in sorted(plan, key=_final_order(sites)):
        for (owner, _), preds in zip(plan[target], answers[target], strict=True):
            rows += prediction_rows(preds.subject_ids, target, f"cross_site:{owner}",
                                    preds.labels, preds.probs)
    return rows


def _final_order(sites: Sites) -> Callable[[str], tuple[int, str]]:
    """Vendors in name order, the hold-out last (the order of predictions.csv)."""
    return lambda name: (int(name == sites.holdout), name)


def _cost_rows(config: TrainConfig, model: ClientModel, state: RunState) -> None:
    """Parameter counts and bytes, per round (mean) and in total."""
    final = config.rounds
    state.metric(final, "server", "cost", "trainable_params", model.count(model.trainable_names))
    state.metric(final, "server", "cost", "shared_params", model.count(model.shared_names))
    state.metric(final, "server", "cost", "private_params", model.count(model.private_names))
    per_subject = train_flops_per_subject(config, model)
    # subject-passes per epoch: a phased schedule (FedDPA) passes over the data once per phase
    subjects = sum(m["value"] * len(training_phases(model.strategy, config, int(m["round"])))
                   for m in state.metrics
                   if m["split"] == "train" and m["metric"] == "n_examples")
    steps = sum(m["value"] for m in state.metrics
                if m["split"] == "train" and m["metric"] == "steps")
    state.metric(final, "server", "cost", "steps_total", steps)
    state.metric(final, "server", "cost", "train_flops_per_subject", per_subject)
    state.metric(final, "server", "cost", "train_flops_total",
                 per_subject * subjects * config.local_epochs)
    for direction in ("up", "down"):
        total = sum(m["bytes"] for m in state.comm if m["direction"] == direction)
        state.metric(final, "server", "cost", f"bytes_{direction}_total", total)
        state.metric(final, "server", "cost", f"bytes_{direction}_per_round", total / final)
