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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from duallora.base.config import TrainConfig
from duallora.base.device import OptimizerStep, to_compute, to_host
from duallora.federated.client_model import ClientModel
from duallora.federated.cohort import ClientData, SplitData
from duallora.federated.dpa import adapter_weights, instance_weights, representations
from duallora.federated.head_norm import apply_head_norm
from duallora.federated.orthogonal import orthogonality_penalty
from duallora.federated.serialization import Payload
from duallora.federated.strategies import INSTANCE, JOINT, ORTHOGONAL, STEM, Strategy
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


@dataclass(frozen=True)
class Phase:
    """One part of a client's round: which parameter groups train, with which adapters active
    and with which weights on them (None: each at its own scaling)."""

    groups: frozenset[str]
    adapters: tuple[str, ...]
    weights: dict[str, float] | None = None


def training_phases(strategy: Strategy, config: TrainConfig, round_idx: int) -> list[Phase]:
    """The strategy's schedule for round ``round_idx``: one joint phase, or FedDPA-T's local
    phase (private groups; shared adapters frozen, mixed in at ``1 - dpa_local_weight``) then
    its shared phase (shared groups, global adapters alone). As in the public FedDPA code, the
    first round has no local phase (there is no global adapter to learn from yet)."""
    if strategy.schedule == JOINT:
        return [Phase(strategy.trainable, strategy.adapters)]
    shared = Phase(strategy.shared, strategy.global_model_adapters)
    if round_idx <= 1:
        return [shared]
    weight = config.dpa_local_weight
    mix = {name: weight if name == strategy.private_adapter else 1.0 - weight
           for name in strategy.adapters}
    return [Phase(strategy.private, strategy.adapters, mix), shared]


def train_client(model: ClientModel, received: Payload | None, private: Payload | None,
                 data: ClientData, config: TrainConfig, round_idx: int) -> ClientUpdate:
    """Load ``received`` over the private state, train ``config.local_epochs`` epochs (per
    phase of the strategy's schedule), report.

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
    apply_head_norm(model, data.head_norm)
    weights = (class_weights(train.labels).to(model.device) if config.class_weighting
               else None)
    losses: list[float] = []
    saved: Payload = {}
    penalty = (orthogonality_penalty(model, config.orth_weight)
               if model.strategy.penalty == ORTHOGONAL else None)
    try:
        for phase in training_phases(model.strategy, config, round_idx):
            model.use_adapters(phase.adapters)
            names = model.train_only(phase.groups)
            optimizer = torch.optim.AdamW(optimizer_groups(model, config, round_idx, names))
            # the kept parameters' AdamW memory belongs to the phase that trains them
            persistent = (config.private_optimizer == "persistent"
                          and bool(set(names) & set(model.kept_names)))
            if persistent:
                restore_moments(optimizer, model, moments)
            with adapter_weights(model.module, phase.weights or {}):
                losses += fit_epochs(model, optimizer, data, config, generator,
                                     config.local_epochs, weights, penalty)
            if persistent:
                saved.update(saved_moments(optimizer, model))
    finally:
        set_mode(model, training=False)
        model.use_adapters(model.strategy.adapters)
    if not np.all(np.isfinite(losses)):
        raise ClientError(f"client {data.name}: non-finite training loss in round {round_idx}")
    metrics = {"loss": float(np.mean(losses)), "n_examples": float(len(train)),
               "steps": float(len(losses))}
    new_private = model.private_payload()
    if config.private_optimizer == "persistent":
        new_private.update(saved)
    return ClientUpdate(model.shared_payload(), len(train), metrics, new_private)


def fit_epochs(model: ClientModel, optimizer: torch.optim.Optimizer, data: ClientData,
               config: TrainConfig, generator: torch.Generator, epochs: int,
               weights: torch.Tensor | None,
               penalty: Callable[[], torch.Tensor] | None = None) -> list[float]:
    """``epochs`` passes over the site's training split in ``generator``'s order; the loss of
    every step (class-weighted cross-entropy, plus ``penalty()`` when given)."""
    train = data.splits["train"]
    step = OptimizerStep(optimizer, model.device, model.precision)
    set_mode(model, training=True)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), config.batch_size):
            batch = train.take(order[start:start + config.batch_size])
            inputs = batch.inputs
            if config.augment and data.from_block is None:
                inputs = {"x": augment(inputs["x"], generator)}
            with model.autocast():
                logits = model.forward(to_compute(inputs, model.device), data.from_block)
            loss = F.cross_entropy(logits.float(), batch.labels.to(model.device),
                                   weight=weights)
            if penalty is not None:
                loss = loss + penalty()
            step(loss)
            losses.append(float(loss.detach()))
    set_mode(model, training=False)
    return losses


def finetune_client(model: ClientModel, received: Payload | None, private: Payload | None,
                    data: ClientData, config: TrainConfig) -> Payload:
    """``fedavg_lora_ft``'s personal model: ``received`` (the selected global payload)
    fine-tuned on the site's training split for ``config.finetune_budget`` epochs at the
    first round's learning rate, optionally pulled towards ``received`` by a proximal term
    (``prox_lambda / 2 * ||w - w_received||^2``, Ditto's regularizer). Every trainable group of
    the strategy is fine-tuned. Returns them all; the result never leaves the site. The
    randomness comes from ``(seed, client)`` alone, so a resumed run fine-tunes identically."""
    train = data.splits["train"]
    if len(train) == 0:
        raise ClientError(f"client {data.name} has no training subjects to fine-tune on")
    seed = client_seed(config.seed, 0, f"finetune/{data.name}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.set_state(received, split_private(private)[0])
    model.use_adapters(model.strategy.adapters)
    apply_head_norm(model, data.head_norm)
    anchor = {name: model.params[name].detach().clone() for name in model.trainable_names}

    def proximal() -> torch.Tensor:
        total = sum(((model.params[name] - value) ** 2).sum() for name, value in anchor.items())
        return 0.5 * config.prox_lambda * total

    weights = (class_weights(train.labels).to(model.device) if config.class_weighting
               else None)
    optimizer = torch.optim.AdamW(optimizer_groups(model, config, 1))
    losses = fit_epochs(model, optimizer, data, config, generator, config.finetune_budget,
                        weights, proximal if config.prox_lambda > 0 else None)
    if not np.all(np.isfinite(losses)):
        raise ClientError(f"client {data.name}: non-finite fine-tuning loss")
    return model.payload(model.trainable_names)


def round_lr(config: TrainConfig, round_idx: int) -> float:
    """The learning rate of round ``round_idx`` (1-based) under ``config.lr_schedule``."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (round_idx - 1) / config.rounds))
    return config.lr


def optimizer_groups(model: ClientModel, config: TrainConfig, round_idx: int,
                     names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups at the round's learning rate, except: the dual strategy's private
    local adapter has its own multiplier and weight decay (so shared signal can be steered to
    the global adapter), and a trainable stem (``--frames trainable-stem``) trains at
    ``STEM_LR_MULT`` times the rate, as CineMA's layer-wise decay does. Without either, one
    group holding ``trainable_parameters()`` in order: the same optimizer as a plain AdamW.
    ``names``: only these trainable parameters (one phase of a phased schedule)."""
    lr = round_lr(config, round_idx)
    chosen = model.trainable_names if names is None else [n for n in model.trainable_names
                                                          if n in set(names)]
    strategy = model.strategy
    local_groups = ({f"{strategy.private_adapter}.A", f"{strategy.private_adapter}.B"}
                    if strategy.private_rank else set())
    local = [n for n in chosen if model.groups[n] in local_groups]
    stem = [n for n in chosen if model.groups[n] == STEM]
    rest = [n for n in chosen if model.groups[n] not in local_groups and model.groups[n] != STEM]
    groups = []
    if rest or not (local or stem):
        groups.append({"params": [model.params[n] for n in rest], "lr": lr,
                       "weight_decay": config.weight_decay})
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
    """AdamW's state (step, first and second moments) of every kept parameter."""
    saved: Payload = {}
    for name in model.kept_names:
        state = optimizer.state.get(model.params[name], {})
        for key in ADAM_STATE_KEYS:
            if key in state:
                saved[f"{OPTIMIZER_PREFIX}{key}/{name}"] = to_host(state[key])
    return saved


def restore_moments(optimizer: torch.optim.Optimizer, model: ClientModel,
                    moments: Payload) -> None:
    """Put the kept parameters' AdamW state from the previous round back in place (the
    moments on the parameter's device; AdamW keeps its step counter on the host)."""
    for name in model.kept_names:
        keys = {key: f"{OPTIMIZER_PREFIX}{key}/{name}" for key in ADAM_STATE_KEYS}
        if all(saved in moments for saved in keys.values()):
            device = model.params[name].device
            optimizer.state[model.params[name]] = {
                key: moments[saved].clone() if key == "step"
                else moments[saved].to(device, copy=True) for key, saved in keys.items()}


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
    """P(disease) for every subject of ``split`` with the model as it is now, in batches on the
    model's device (under its autocast); the probabilities come back as float32."""
    set_mode(model, training=False)
    probs = []
    for start in range(0, len(split), batch_size):
        batch = split.take(list(range(start, min(start + batch_size, len(split)))))
        with model.autocast():
            logits = model.forward(to_compute(batch.inputs, model.device), from_block)
        probs.append(torch.softmax(logits.float(), dim=1)[:, 1])
    values = torch.cat(probs).cpu().numpy() if probs else np.zeros(0, dtype=np.float32)
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
        if model.strategy.mixing == INSTANCE and not global_only:
            return predict_mixed(model, data, split, config)
        return predict(model, data.splits[split], data.from_block, config.eval_batch_size)
    finally:
        model.use_adapters(model.strategy.adapters)


@torch.no_grad()
def predict_mixed(model: ClientModel, data: ClientData, split: str,
                  config: TrainConfig) -> Predictions:
    """FedDPA's personalized prediction (``duallora.federated.dpa``): each instance of
    ``split`` with the global adapters at its own weight ``alpha`` and the private adapter at
    ``1 - alpha``, one instance at a time. The reference training instances are drawn from
    ``(seed, client, split)``, the same draw in every round and on every transport."""
    strategy = model.strategy
    target = data.splits[split]
    set_mode(model, training=False)
    private = (strategy.private_adapter,)
    reference = representations(model, data.splits["train"], data.from_block,
                                config.eval_batch_size, private)
    test = representations(model, target, data.from_block, config.eval_batch_size, private)
    generator = torch.Generator().manual_seed(
        client_seed(config.seed, 0, f"feddpa/{data.name}/{split}"))
    alphas = instance_weights(test, reference, config.dpa_max_weight, config.dpa_instances,
                              generator)
    probs = []
    for index, alpha in enumerate(alphas.tolist()):
        mix = {name: alpha if name in strategy.global_model_adapters else 1.0 - alpha
               for name in strategy.adapters}
        with adapter_weights(model.module, mix), model.autocast():
            logits = model.forward(to_compute(target.take([index]).inputs, model.device),
                                   data.from_block)
        probs.append(torch.softmax(logits.float(), dim=1)[:, 1])
    values = torch.cat(probs).cpu().numpy() if probs else np.zeros(0, dtype=np.float32)
    return Predictions(list(target.subject_ids), target.labels.numpy().copy(), values)
