"""Standardize what the classification heads read, with statistics pooled across clients.

Why: behind CineMA's final LayerNorm, the two vectors the heads read (mean patch token, CLS)
vary between subjects by only a few percent of their size. A linear head trained with Adam then
spends its steps on the common part and barely learns (on the phantom cohort the training loss
stayed at ln 2 for every strategy). Standardizing each feature with the training set's mean and
standard deviation, computed once with the initial model and fixed for the run, fixes that; it
is a fixed affine map in front of the heads, so it can be folded into them for export
(``ConvViT.fold_head_standardization``).

Federated, the statistics are pooled without pooling data: each client sends its count, sum and
sum of squares once (round 0 in ``comm.jsonl``), and the server combines them into exactly the
pooled mean and standard deviation. ``local`` (no server) uses each client's own statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from duallora.base.config import TrainConfig
from duallora.base.device import to_compute
from duallora.federated.client_model import ClientModel
from duallora.federated.cohort import SplitData
from duallora.federated.prepare import FederatedCohort
from duallora.federated.serialization import Payload
from duallora.federated.strategies import Strategy

MIN_STD = 1e-6  # a constant feature is left unscaled rather than divided by zero


@torch.no_grad()
def raw_head_inputs(model: ClientModel, split: SplitData, from_block: int | None,
                    batch_size: int) -> torch.Tensor:
    """(N, 2, d): the unstandardized head inputs of every subject of ``split`` (images, or
    cached prefix states cut at ``from_block``), computed on the model's device under its
    autocast (as in training), returned as float32 on the host."""
    core = model.core
    core.eval()
    rows = []
    for start in range(0, len(split), batch_size):
        batch = split.take(list(range(start, min(start + batch_size, len(split)))))
        inputs = to_compute(batch.inputs, model.device)
        with model.autocast():
            if from_block is None:
                state, cut = core.forward_prefix(inputs["x"], core.n_blocks), core.n_blocks
            else:
                state, cut = inputs, from_block
            rows.append(core.raw_head_inputs(state, cut).float().cpu())
    return torch.cat(rows)


def client_moments(model: ClientModel, split: SplitData, from_block: int | None,
                   batch_size: int) -> Payload:
    """What a client sends: ``count``, ``sum`` and ``sum_sq`` of its training features.

    Computed with the model at its shared initial state (no private part, adapters at their
    zero-output init), which every client holds identically.
    """
    model.set_state(None, None)
    features = raw_head_inputs(model, split, from_block, batch_size).double()
    return {"count": torch.tensor([float(len(features))], dtype=torch.float64),
            "sum": features.sum(dim=0), "sum_sq": (features ** 2).sum(dim=0)}


def combine_moments(moments: list[Payload]) -> Payload:
    """Pooled ``mean`` and ``std`` (float32, (2, d)) from clients' moments (server side)."""
    if not moments:
        raise ValueError("no client statistics to combine")
    count = sum(float(m["count"].sum()) for m in moments)
    if count < 2:
        raise ValueError(f"need at least 2 training subjects for feature statistics, got "
                         f"{count:.0f}")
    total = sum(m["sum"] for m in moments)
    total_sq = sum(m["sum_sq"] for m in moments)
    mean = total / count
    var = (total_sq - count * mean ** 2) / (count - 1)  # unbiased, as torch.std
    std = var.clamp(min=0.0).sqrt().clamp(min=MIN_STD)
    return {"mean": mean.float(), "std": std.float()}


def apply_head_norm(model: ClientModel, stats: Payload | None) -> None:
    """Set the standardization in front of the heads (identity when ``stats`` is None)."""
    core = model.core
    if stats is None:
        core.set_head_standardization(torch.zeros_like(core.head_input_mean),
                                      torch.ones_like(core.head_input_std))
    else:
        core.set_head_standardization(stats["mean"].to(core.head_input_mean),
                                      stats["std"].to(core.head_input_std))


SendFn = Callable[[Payload, str, str], Payload]  # (payload, client, direction) -> as received


def pooled_head_norm(strategy: Strategy, moments: dict[str, Payload],
                     send: SendFn | None = None) -> dict[str, Payload]:
    """The run's head standardization by owner, from each training site's ``moments``.

    Federated and pooled strategies get one ``{"global": stats}``; ``local`` (no server) keeps
    each client's own statistics. ``send`` routes each federated message through the wire (so
    ``comm.jsonl`` records it): the moments up, in site order, then the pooled result down.
    """
    names = sorted(moments)
    if not strategy.federated and not strategy.pooled:  # local: no server, own statistics
        return {name: combine_moments([moments[name]]) for name in names}
    uploads = [send(moments[name], name, "up") if send and strategy.federated else moments[name]
               for name in names]
    stats = combine_moments(uploads)
    if send and strategy.federated:
        for name in names:
            send(stats, name, "down")
    return {"global": stats}


def assign_head_norm(cohort: FederatedCohort, owners: dict[str, Payload]) -> None:
    """Give every client's data (training sites, evaluated vendors, hold-out) its statistics."""
    if "global" in owners:
        everyone = list(cohort.train_clients.values()) + list(cohort.vendors.values())
        if cohort.holdout is not None:
            everyone.append(cohort.holdout)
        for client in everyone:
            client.head_norm = owners["global"]
        return
    for name, stats in owners.items():
        cohort.train_clients[name].head_norm = stats


def cohort_moments(config: TrainConfig, model: ClientModel, cohort: FederatedCohort
                   ) -> dict[str, Payload]:
    """Every training client's moments, computed here (the in-process sites)."""
    return {name: client_moments(model, client.splits["train"], client.from_block,
                                 config.eval_batch_size)
            for name, client in sorted(cohort.train_clients.items())}


def setup_head_norm(config: TrainConfig, strategy: Strategy, model: ClientModel,
                    cohort: FederatedCohort, send: SendFn | None = None
                    ) -> dict[str, Payload]:
    """In-process convenience: compute the run's head standardization and give it to every
    client's data. Returns the statistics by owner; empty when ``config.head_norm`` is off."""
    if not config.head_norm:
        return {}
    owners = pooled_head_norm(strategy, cohort_moments(config, model, cohort), send)
    assign_head_norm(cohort, owners)
    return owners
