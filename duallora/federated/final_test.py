"""The final test: the selected models on every test split, the summary metrics, the costs.

Each vendor's selected personalized model (and, for strategies with private parts, the same
model before aggregation), the selected global model on every vendor and on the hold-out, and
optionally every personalized model on every other vendor (``--cross-site``). Writes
``predictions.csv``, the summary rows of ``metrics.csv``, the cost rows, and the exported
final models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from duallora.base.config import TrainConfig
from duallora.base.rundir import RunDir
from duallora.federated.client import training_phases
from duallora.federated.client_model import ClientModel
from duallora.federated.flops import train_flops_per_subject
from duallora.federated.sites import EvalRequest, Sites
from duallora.federated.state import RunState
from duallora.federated.strategies import Strategy
from duallora.results.evaluation import prediction_rows, summary_rows

# predictions.csv splits, in file order: each site's personalized model (after aggregation),
# the global model on every vendor, on the hold-out, and (strategies with private parts) the
# personalized model as the site trained it, before the server averaged the shared part
FINAL_SPLITS = ("test", "test_global", "holdout", "test_before_aggregation")


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
    rundir.write_json(rundir.events, state.events)
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
