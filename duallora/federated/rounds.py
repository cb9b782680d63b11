"""One training round as the driver runs it: requests out, answers in, aggregation.

What each site receives (the global payload, or under leave-one-out aggregation FedALT's
rest-of-world mean), who misses the round (``--drop-prob``), and what the answers do to the run
state: uploads logged and aggregated, private handles kept, failures and skipped rounds
recorded. Every message goes through ``serialization.encode``/``decode`` here (``send_logged``),
so ``comm.jsonl`` records real message sizes whatever the transport.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.federated.fedalt import rest_of_world
from duallora.federated.serialization import Payload, decode, encode
from duallora.federated.sites import Sites, TrainRequest
from duallora.federated.state import RunState
from duallora.federated.strategies import LEAVE_ONE_OUT, Strategy

# (round, uploads) -> the new global payload; default: the strategy's weighted mean
Aggregator = Callable[[int, Sequence[tuple[Payload, int]]], Payload]


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
