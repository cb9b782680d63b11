"""What one client does in a round: train on its own data, or evaluate. Pure functions.

Nothing here knows about the in-process loop or Flower: both call ``train_client`` and
``evaluate_client`` with a ``ClientModel``, the payload received from the server, the client's
private state from its previous round, and its data. Randomness (batch order, LoRA dropout,
augmentation) comes from a seed derived from ``(config.seed, round, client name)``, so a client's
round gives the same result wherever and whenever it runs; there is no RNG state to carry.
The optimizer is created each round (the usual FedAvg client); with ``--private-optimizer
persistent`` the AdamW state of the private parameters is kept in the private payload (keys
under ``optimizer/``), so a client's whole memory between rounds is still its private payload.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from duallora.federated.client_model import ClientModel
from duallora.federated.cohort import ClientData, SplitData
from duallora.federated.config import TrainConfig
from duallora.federated.head_norm import apply_head_norm
from duallora.federated.serialization import Payload
from duallora.federated.strategies import STEM
from duallora.model.frames import STEM_LR_MULT

OPTIMIZER_PREFIX = "optimizer/"   # private-state keys that hold AdamW state, not parameters
ADAM_STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")


class ClientError(RuntimeError):
    """A client could not finish its round (the server leaves it out of the aggregate)."""


@dataclass
class ClientUpdate:
    """A client's answer to a training round."""

    upload: Payload                 # goes to the server (strategy.shared groups only)
    n_examples: int                 # aggregation weight
    metrics: dict[str, float]
    private: Payload = field(default_factory=dict)  # stays on the client for its next round


@dataclass
class Predictions:
    subject_ids: list[str]
    labels: np.ndarray
    probs: np.ndarray               # P(disease)


def client_seed(seed: int, round_idx: int, client: str) -> int:
    """A stable 63-bit seed for one client's round (independent of process and order)."""
    text = f"{seed}/{round_idx}/{client}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


def should_fail(config: TrainConfig, client: str, round_idx: int) -> bool:
    """Fault injection for tests and demos: ``NAME`` (every round) or ``NAME@R``."""
    return client in config.fail_clients or f"{client}@{round_idx}" in config.fail_clients


def class_weights(labels: torch.Tensor, n_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency weights ``n / (C * n_c)`` so the minority class (NOR) counts as much."""
    counts = torch.bincount(labels, minlength=n_classes).to(torch.float32)
    weights = torch.where(counts > 0, labels.numel() / (n_classes * counts.clamp(min=1)),
                          torch.zeros_like(counts))
    return weights


def set_mode(model: ClientModel, training: bool) -> None:
    """The frozen backbone always runs in eval mode; only LoRA dropout follows ``training``."""
    model.core.eval()
    if training:
        for name, module in model.core.named_modules():
            if name.endswith("lora_dropout"):
                module.train()


def train_client(model: ClientModel, received: Payload | None, private: Payload | None,
                 data: ClientData, config: TrainConfig, round_idx: int) -> ClientUpdate:
    """Load ``received`` over the private state, train ``config.local_epochs`` epochs, report.

    Returns the upload (the strategy's shared tensors), the number of training examples (the
    aggregation weight), a few metrics, and the new private state.
    """
    if should_fail(config, data.name, round_idx):
        raise ClientError(f"client {data.name} failed in round {round_idx} (injected)")
    train = data.splits["train"]
    if len(train) == 0:
        raise ClientError(f"client {data.name} has no training subjects")
    seed = client_seed(config.seed, round_idx, data.name)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # LoRA dropout draws from the global generator
    private_params, moments = split_private(private)
    model.set_state(received, private_params)
    model.use_adapters(model.strategy.adapters)
    apply_head_norm(model, data.head_norm)
    weights = class_weights(train.labels) if config.class_weighting else None
    optimizer = torch.optim.AdamW(optimizer_groups(model, config, round_idx))
    if config.private_optimizer == "persistent":
        restore_moments(optimizer, model, moments)
    set_mode(model, training=True)
    losses = []
    for _ in range(config.local_epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), config.batch_size):
            batch = train.take(order[start:start + config.batch_size])
            inputs = batch.inputs
            if config.augment and data.from_block is None:
                inputs = {"x": augment(inputs["x"], generator)}
            logits = model.forward(inputs, data.from_block)
            loss = F.cross_entropy(logits, batch.labels, weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    set_mode(model, training=False)
    if not np.all(np.isfinite(losses)):
        raise ClientError(f"client {data.name}: non-finite training loss in round {round_idx}")
    metrics = {"loss": float(np.mean(losses)), "n_examples": float(len(train)),
               "steps": float(len(losses))}
    new_private = model.private_payload()
    if config.private_optimizer == "persistent":
        new_private.update(saved_moments(optimizer, model))
    return ClientUpdate(model.shared_payload(), len(train), metrics, new_private)


def round_lr(config: TrainConfig, round_idx: int) -> float:
    """The learning rate of round ``round_idx`` (1-based) under ``config.lr_schedule``."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (round_idx - 1) / config.rounds))
    return config.lr


def optimizer_groups(model: ClientModel, config: TrainConfig, round_idx: int
                     ) -> list[dict[str, Any]]:
    """AdamW parameter groups at the round's learning rate, except: the dual strategy's private
    local adapter has its own multiplier and weight decay (so shared signal can be steered to
    the global adapter), and a trainable stem (``--frames trainable-stem``) trains at
    ``STEM_LR_MULT`` times the rate, as CineMA's layer-wise decay does. Without either, one
    group holding ``trainable_parameters()`` in order: the same optimizer as a plain AdamW."""
    lr = round_lr(config, round_idx)
    strategy = model.strategy
    local_groups = ({f"{strategy.private_adapter}.A", f"{strategy.private_adapter}.B"}
                    if strategy.private_rank else set())
    local = [n for n in model.trainable_names if model.groups[n] in local_groups]
    stem = [n for n in model.trainable_names if model.groups[n] == STEM]
    rest = [n for n in model.trainable_names
            if model.groups[n] not in local_groups and model.groups[n] != STEM]
    groups = [{"params": [model.params[n] for n in rest], "lr": lr,
               "weight_decay": config.weight_decay}]
    if local:
        groups.append({"params": [model.params[n] for n in local],
                       "lr": lr * config.local_lr_mult,
                       "weight_decay": config.local_weight_decay})
    if stem:
        groups.append({"params": [model.params[n] for n in stem], "lr": lr * STEM_LR_MULT,
                       "weight_decay": config.weight_decay})
    return groups


def split_private(private: Payload | None) -> tuple[Payload, Payload]:
    """(parameters, optimizer moments) of a private state: moments travel nowhere, they are
    the site's own optimizer memory (``--private-optimizer persistent``)."""
    private = private or {}
    moments = {k: v for k, v in private.items() if k.startswith(OPTIMIZER_PREFIX)}
    return {k: v for k, v in private.items() if k not in moments}, moments


def saved_moments(optimizer: torch.optim.Optimizer, model: ClientModel) -> Payload:
    """AdamW's state (step, first and second moments) of every private parameter."""
    saved: Payload = {}
    for name in model.private_names:
        state = optimizer.state.get(model.params[name], {})
        for key in ADAM_STATE_KEYS:
            if key in state:
                saved[f"{OPTIMIZER_PREFIX}{key}/{name}"] = state[key].detach().clone()
    return saved


def restore_moments(optimizer: torch.optim.Optimizer, model: ClientModel,
                    moments: Payload) -> None:
    """Put the private parameters' AdamW state from the previous round back in place."""
    for name in model.private_names:
        keys = {key: f"{OPTIMIZER_PREFIX}{key}/{name}" for key in ADAM_STATE_KEYS}
        if all(saved in moments for saved in keys.values()):
            optimizer.state[model.params[name]] = {key: moments[saved].clone()
                                                   for key, saved in keys.items()}


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild intensity augmentation (scale, shift, Gaussian noise), clipped back to [0, 1].

    Geometric augmentation is left out on purpose: harmonization already centres the LV and the
    phantoms' vendor differences are intensity- and noise-like.
    """
    batch = images.shape[0]
    shape = (batch,) + (1,) * (images.dim() - 1)
    scale = 1.0 + 0.1 * (2 * torch.rand(shape, generator=generator) - 1)
    shift = 0.05 * (2 * torch.rand(shape, generator=generator) - 1)
    noise = 0.02 * torch.randn(images.shape, generator=generator)
    return (images * scale + shift + noise).clamp(0.0, 1.0)


@torch.no_grad()
def predict(model: ClientModel, split: SplitData, from_block: int | None,
            batch_size: int) -> Predictions:
    """P(disease) for every subject of ``split`` with the model as it is now."""
    set_mode(model, training=False)
    probs = []
    for start in range(0, len(split), batch_size):
        batch = split.take(list(range(start, min(start + batch_size, len(split)))))
        logits = model.forward(batch.inputs, from_block)
        probs.append(torch.softmax(logits.float(), dim=1)[:, 1])
    values = torch.cat(probs).numpy() if probs else np.zeros(0, dtype=np.float32)
    return Predictions(list(split.subject_ids), split.labels.numpy().copy(), values)


def evaluate_client(model: ClientModel, received: Payload | None, private: Payload | None,
                    data: ClientData, split: str, config: TrainConfig,
                    global_only: bool = False) -> Predictions:
    """Predict ``split`` with the personalized model (global + private parts), or with the
    global-only model (``global_only``: private parts reset, local adapter switched off)."""
    apply_head_norm(model, data.head_norm)
    if global_only:
        model.set_state(received, None)
        model.use_adapters(model.strategy.global_model_adapters)
    else:
        model.set_state(received, split_private(private)[0])
        model.use_adapters(model.strategy.adapters)
    try:
        return predict(model, data.splits[split], data.from_block, config.eval_batch_size)
    finally:
        model.use_adapters(model.strategy.adapters)
