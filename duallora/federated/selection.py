"""Validation and model selection: which round's models the final test uses.

After every round each site validates its personalized model (and, for strategies that have
one, the global model); ``--selection`` says which round is kept:

- ``site-val-ba``: each site its own best round by validation balanced accuracy (the global
  model: by the size-weighted mean over sites);
- ``final``: the last round, no selection;
- ``pooled-val-loss``: one round for every site, the lowest log loss over all sites'
  validation subjects (the global model by its own pooled loss).

Under ``SITE_DECIDED_RULES`` a site can tell alone whether its last round replaces its
selection (``last_round_replaces``), which lets a transport send the last validation with the
final test (``final_candidates``; ``federated.last_validation``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from duallora.federated.client import Predictions
from duallora.federated.final_test import final_plan
from duallora.federated.rounds import own_upload, received_payload
from duallora.federated.sites import EvalRequest, Sites
from duallora.federated.state import RunState, SelectedRound
from duallora.federated.strategies import Strategy
from duallora.results.metrics import binary_metrics

VAL_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc")
# selection rules under which a site can tell alone whether its last round replaces its
# selected model (its own validation score against the selection's): a pipelining transport
# then sends the last validation and the final test as one message (``validate_then_test``)
SITE_DECIDED_RULES = ("site-val-ba", "final")


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
