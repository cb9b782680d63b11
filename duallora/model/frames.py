"""How the ConvViT reads the two cine frames (ED, ES): the ``frames`` model option.

CineMA's foundation model is a one-frame MAE; its classifier stacks ED and ES as two input
channels of the first conv and starts from the one-frame kernel repeated for both, so the first
conv sees ``w*ED + w*ES``. CineMA then trains every weight and breaks that symmetry. The LoRA
strategies here keep the stem and the first blocks frozen for ever, so under that input the
frozen prefix cannot tell ED from ES (swapping them changes its output by ~1e-6, relative).
Three ways to feed the frames, one model option (``ConvViTConfig.frames``; its names are
declared in ``duallora.base.presets``):

- ``repeat``: CineMA's input (two-channel first conv, one-frame kernel repeated). The default,
  and the only layout of upstream fine-tuned checkpoints, whose logits it reproduces exactly.
- ``per-frame``: the first conv has one input channel (the MAE's own kernel, loaded as is); the
  stem and the blocks before ``model.fusion_block`` run on ED and ES separately (a batch of 2B
  one-frame volumes), then :class:`FrameFusion` merges the two streams,
  ``t = (t_ED + t_ES) / 2 + (t_ED - t_ES) V U^T`` along the channel axis, on the tokens (CLS
  included) and on every conv skip map. ``U = 0`` at init, so the model starts from the exact
  mean of the two one-frame streams. The prefix stays frozen and cacheable (at twice the
  one-off cost); the fusion is trained and shared like the global adapter.
- ``trainable-stem``: CineMA's input, but the first conv (weight and bias) is trained in every
  strategy at ``lr * STEM_LR_MULT`` (no prefix cache, since the stem is part of the prefix).
"""

from __future__ import annotations

import math

import torch
from torch import nn

FRAME_NAMES = ("ED", "ES")  # order of the frames on the input's axis 1

# Rank of the fusion's difference term. 4 directions per stream are plenty to carry "how the
# frames differ" (wall thickening, cavity shrinkage) and cost ~1.2k parameters on the tutorial
# preset (embed 96, stem 16/32), small next to a rank-4 LoRA on two blocks.
FUSION_RANK = 4
# V is drawn from its own generator with this seed, so every client (and the server) builds the
# same fusion init without touching the global RNG (the heads' init is the same in every mode).
FUSION_SEED = 1603
FUSION_PREFIX = "frame_fusion."

# Learning-rate multiplier of the trainable stem. CineMA fine-tunes with layer-wise LR decay
# 0.75 (its classification configs), under which the parameters before block 0 get
# 0.75 ** (depth + 1): 0.13 for the tutorial's 6 blocks, 0.024 for base's 12. One constant of
# that order, 0.1, keeps the rule simple and the pretrained kernel close to where it started.
STEM_LR_MULT = 0.1


def frame_key(key: str, frame: str) -> str:
    """Name of one frame's tensor in a per-frame prefix state: ``tokens@ED``, ``skip0@ES``."""
    return f"{key}@{frame}"


def split_frames(state: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    """A state computed on a frame-major batch of ``2 * batch`` one-frame volumes -> per-frame
    keys, every tensor batch-first (B, ...)."""
    out = {}
    for key, value in state.items():
        for index, frame in enumerate(FRAME_NAMES):
            out[frame_key(key, frame)] = value[index * batch:(index + 1) * batch]
    return out


def join_frames(state: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`split_frames`: per-frame keys -> a frame-major 2B batch."""
    return {key: torch.cat([state[frame_key(key, frame)] for frame in FRAME_NAMES])
            for key in keys}


class LowRankDifference(nn.Module):
    """``(a + b) / 2 + (a - b) V U^T`` over the channel axis ``dim`` (U zero at init)."""

    def __init__(self, channels: int, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.zeros(channels, rank))
        self.V = nn.Parameter(torch.randn(channels, rank, generator=generator)
                              / math.sqrt(channels))

    def forward(self, a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
        diff = (a - b).movedim(dim, -1)
        delta = (diff @ self.V) @ self.U.T
        return (a + b) / 2 + delta.movedim(-1, dim)


class FrameFusion(nn.Module):
    """Merges the ED and ES streams of a per-frame state into one ordinary state.

    One :class:`LowRankDifference` for the tokens (CLS and patches alike, channels last) and one
    per conv skip map (channels on axis 1).
    """

    def __init__(self, embed_dim: int, skip_chans: tuple[int, ...], rank: int = FUSION_RANK,
                 seed: int = FUSION_SEED) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.tokens = LowRankDifference(embed_dim, rank, generator)
        self.skips = nn.ModuleList([LowRankDifference(c, rank, generator) for c in skip_chans])

    def forward(self, state: dict[str, torch.Tensor], tokens_key: str, skip_keys: list[str],
                ) -> dict[str, torch.Tensor]:
        ed, es = FRAME_NAMES
        fused = {tokens_key: self.tokens(state[frame_key(tokens_key, ed)],
                                         state[frame_key(tokens_key, es)], dim=-1)}
        for key, term in zip(skip_keys, self.skips, strict=True):
            fused[key] = term(state[frame_key(key, ed)], state[frame_key(key, es)], dim=1)
        return fused
