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

from duallora.federated.client_model import ClientModel
from duallora.federated.cohort import SplitData
from duallora.federated.config import TrainConfig
from duallora.federated.prepare import FederatedCohort
from duallora.federated.serialization import Payload
from duallora.federated.strategies import Strategy

MIN_STD = 1e-6  # a constant feature is left unscaled rather than divided by zero


@torch.no_grad()
def raw_head_inputs(model: ClientModel, split: SplitData, from_block: int | None,
                    batch_size: int) -> torch.Tensor:
    """(N, 2, d): the unstandardized head inputs of every subject of ``split`` (images, or
    cached prefix states cut at ``from_block``)."""
    core = model.core
    core.eval()
    rows = []
    for start in range(0, len(split), batch_size):
        batch = split.take(list(range(start, min(start + batch_size, len(split)))))
        if from_block is None:
            state, cut = core.forward_prefix(batch.inputs["x"], core.n_blocks), core.n_blocks
        else:
            state, cut = batch.inputs, from_block
        rows.append(core.raw_head_inputs(state, cut).float())
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


def setup_head_norm(config: TrainConfig, strategy: Strategy, model: ClientModel,
                    cohort: FederatedCohort, send: SendFn | None = None,
                    moments_of: Callable[[str], Payload] | None = None
                    ) -> dict[str, Payload]:
    """Compute the run's head standardization and give it to every client's data.

    ``send`` routes each federated message through the wire (so ``comm.jsonl`` records it);
    ``moments_of(client)`` is replaced by the Flower ServerApp, whose sites compute their own.
    Returns the statistics by owner: ``{"global": stats}``, or one entry per client for
    ``local``; empty when ``config.head_norm`` is off.
    """
    if not config.head_norm:
        return {}

    def local_moments(name: str) -> Payload:
        client = cohort.train_clients[name]
        return client_moments(model, client.splits["train"], client.from_block,
                              config.eval_batch_size)

    moments_of = moments_of or local_moments
    names = sorted(cohort.train_clients)
    if not strategy.federated and not strategy.pooled:  # local: no server, own statistics
        for name in names:
            cohort.train_clients[name].head_norm = combine_moments([moments_of(name)])
        return {name: cohort.train_clients[name].head_norm for name in names}
    uploads = []
    for name in names:
        moments = moments_of(name)
        uploads.append(send(moments, name, "up") if send and strategy.federated else moments)
    stats = combine_moments(uploads)
    everyone = list(cohort.train_clients.values()) + list(cohort.vendors.values())
    if cohort.holdout is not None:
        everyone.append(cohort.holdout)
    for client in everyone:
        client.head_norm = stats
    if send and strategy.federated:
        for name in names:
            send(stats, name, "down")
    return {"global": stats}
