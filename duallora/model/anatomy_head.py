"""Optional auxiliary pretraining objective: per-slice LV / MYO / RV areas from the encoder.

Why: the MAE loss rewards painting texture back; cavity and myocardium sizes, what a cardiac
probe reads, are only learnt indirectly. A linear head on the mean of the encoder's visible
output tokens predicting the frame's per-slice areas (from the generator's masks, never disease
labels) pushes that anatomy into the pooled features. The head is discarded after pretraining:
only the encoder is saved, so the weights load as any other foundation model.

Targets are standardized per (structure, slice) by the population's mean and std, so every
target weighs alike whatever its size; a target that never varies (a slice that is always
padding) keeps std 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from duallora.model.mae import MaskedAutoencoder


def standardize_areas(areas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int16 (N, 3, D) areas -> float32 (N, 3*D) targets, their mean and std (3*D each)."""
    flat = areas.reshape(len(areas), -1).to(torch.float64)
    mean, std = flat.mean(dim=0), flat.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((flat - mean) / std).float(), mean.float(), std.float()


def build_head(model: MaskedAutoencoder, n_targets: int, seed: int) -> nn.Linear:
    """The linear head, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(model.config.embed_dim, n_targets)


class PooledTokens:
    """Keeps the mean of the MAE encoder's visible output tokens (CLS excluded) of the last
    forward pass, read through a forward hook so the MAE itself is untouched."""

    def __init__(self, model: MaskedAutoencoder) -> None:
        self.value: torch.Tensor | None = None
        self._handle = model.encoder.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.value = output[:, 1:].mean(dim=1)

    def remove(self) -> None:
        self._handle.remove()


def anatomy_loss(head: nn.Module, pooled: PooledTokens, targets: torch.Tensor) -> torch.Tensor:
    """MSE of the head's prediction from the last forward pass against standardized targets."""
    if pooled.value is None:
        raise RuntimeError("anatomy loss before any forward pass")
    return F.mse_loss(head(pooled.value).float(), targets)
