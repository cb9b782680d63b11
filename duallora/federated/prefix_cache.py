"""Compute the frozen part of the model once per client, not once per step.

When every trained weight lies in blocks ``>= k`` (plus the heads), the stem and blocks
``[0, k)`` give the same output in every epoch, round and strategy. ``prefix_states`` runs
``model.forward_prefix(x, k)`` once and keeps the result on disk, keyed by a hash of the prefix
weights, ``k`` and the images, so every strategy that adapts the same blocks reuses it. Training
then runs only ``model.forward_suffix`` (the same arithmetic as the full forward). Under
``frames="per-frame"`` the cached state holds both frames' streams (``tokens@ED``, ...), twice
the tensors of the other modes; ``trainable-stem`` trains a prefix weight, so it is not cached.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

_MEMORY: dict[str, dict[str, torch.Tensor]] = {}
_MEMORY_LIMIT = 8


def prefix_key(core: nn.Module, images: torch.Tensor, upto_block: int) -> str:
    """Hash of what the prefix output depends on: its weights, the split point, the images,
    and the ``frames`` mode with its fusion block (they change the state's layout)."""
    digest = hashlib.sha256()
    digest.update(f"upto={upto_block};shape={tuple(images.shape)};".encode())
    frames = getattr(core, "frames", "repeat")
    digest.update(f"frames={frames};fusion={getattr(core, 'fusion_block', None)};".encode())
    params = dict(core.named_parameters())
    for name in sorted(core.prefix_parameter_names(upto_block)):
        digest.update(name.encode())
        digest.update(params[name].detach().cpu().contiguous().numpy().tobytes())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


@torch.no_grad()
def compute_prefix(core: nn.Module, images: torch.Tensor, upto_block: int,
                   batch_size: int) -> dict[str, torch.Tensor]:
    """``forward_prefix`` over ``images`` in chunks, concatenated (every tensor batch-first)."""
    was_training = core.training
    core.eval()
    chunks = [core.forward_prefix(images[i:i + batch_size], upto_block)
              for i in range(0, len(images), batch_size)]
    core.train(was_training)
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}


def prefix_states(core: nn.Module, images: torch.Tensor, upto_block: int, batch_size: int,
                  cache_dir: Path | None) -> dict[str, torch.Tensor]:
    """Cached ``forward_prefix(images, upto_block)``; computed and stored on first use."""
    if len(images) == 0:
        empty = compute_prefix(core, images[:1].new_zeros((1, *images.shape[1:])), upto_block, 1)
        return {key: value[:0] for key, value in empty.items()}
    key = prefix_key(core, images, upto_block)
    if key in _MEMORY:
        return _MEMORY[key]
    path = Path(cache_dir) / f"prefix-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        states = load_file(str(path))
    else:
        states = compute_prefix(core, images, upto_block, batch_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".tmp{os.getpid()}")
            save_file({k: v.contiguous() for k, v in states.items()}, str(partial))
            os.replace(partial, path)
    if len(_MEMORY) >= _MEMORY_LIMIT:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = states
    return states


def clear_memory() -> None:
    """Forget in-process copies (the disk cache stays)."""
    _MEMORY.clear()
