"""Compute the frozen part of the model once per client, not once per step.

When every trained weight lies in blocks ``>= k`` (plus the heads), the stem and blocks
``[0, k)`` give the same output in every epoch, round and strategy. ``prefix_states`` runs
``model.forward_prefix(x, k)`` once and keeps the result on disk, keyed by a hash of the prefix
weights, ``k`` and the images, so every strategy that adapts the same blocks reuses it. Training
then runs only ``model.forward_suffix`` (the same arithmetic as the full forward). Under
``frames="per-frame"`` the cached state holds both frames' streams (``tokens@ED``, ...), twice
the tensors of the other modes; ``trainable-stem`` trains a prefix weight, so it is not cached.

On a device (``--device cuda``) the prefix is computed there in batches, under the run's
autocast, and stored in the compute precision (bf16 halves the cache); the states then stay on
the GPU when they fit, else in pinned host memory (``device.place_cache``). A cache made at
another precision or on another kind of device has another key: the numbers differ slightly.
(Key format v2: the weights and the images enter the key by their own SHA-256, so each is
hashed once per process; caches written by earlier kits are recomputed once.)
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from duallora.base.device import autocast, place_cache, storage_dtype

_MEMORY: dict[str, dict[str, torch.Tensor]] = {}
_MEMORY_LIMIT = 16  # one cohort's splits in memory: 4 vendors x 3 splits + a hold-out
_DIGESTS: dict[int, tuple[weakref.ref, int, str]] = {}  # id(tensor) -> (ref, version, sha256)


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes, remembered while the tensor lives and is not changed in
    place (``_version``): a paper-scale cohort is 4 GB of images and CineMA base's prefix
    340 MB of weights, hashed once per process instead of once per split and run."""
    entry = _DIGESTS.get(id(tensor))
    if entry is not None and entry[0]() is tensor and entry[1] == tensor._version:
        return entry[2]
    value = hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    ident = id(tensor)
    _DIGESTS[ident] = (weakref.ref(tensor, lambda _ref: _DIGESTS.pop(ident, None)),
                       tensor._version, value)
    return value


def prefix_key(core: nn.Module, images: torch.Tensor, upto_block: int,
               device_type: str = "cpu", precision: str = "fp32") -> str:
    """Hash of what the prefix output depends on: its weights, the split point, the images,
    the ``frames`` mode with its fusion block (they change the state's layout), and where and
    in which precision it is computed (the numbers differ slightly between them)."""
    digest = hashlib.sha256()
    digest.update(f"v2;upto={upto_block};shape={tuple(images.shape)};".encode())
    digest.update(f"device={device_type};precision={precision};".encode())
    frames = getattr(core, "frames", "repeat")
    digest.update(f"frames={frames};fusion={getattr(core, 'fusion_block', None)};".encode())
    params = dict(core.named_parameters())
    for name in sorted(core.prefix_parameter_names(upto_block)):
        digest.update(name.encode())
        digest.update(tensor_digest(params[name]).encode())
    digest.update(tensor_digest(images).encode())
    return digest.hexdigest()[:32]


@torch.no_grad()
def compute_prefix(core: nn.Module, images: torch.Tensor, upto_block: int, batch_size: int,
                   device: torch.device | None = None, precision: str | None = None
                   ) -> dict[str, torch.Tensor]:
    """``forward_prefix`` over ``images`` in chunks, concatenated (every tensor batch-first).

    With ``device``, each chunk is computed there (under ``precision`` autocast, stored in that
    precision) and brought back to the host, so a cohort larger than the GPU still fits; without
    it, the chunks are computed where ``images`` are and kept there (the benchmarks)."""
    was_training = core.training
    core.eval()
    chunks = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        if device is None:
            chunks.append(core.forward_prefix(chunk, upto_block))
            continue
        dtype = storage_dtype(precision or "fp32")
        with autocast(device, precision or "fp32"):
            out = core.forward_prefix(chunk.to(device, non_blocking=True), upto_block)
        chunks.append({k: v.to("cpu", dtype) if v.is_floating_point() else v.cpu()
                       for k, v in out.items()})
    core.train(was_training)
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}


def prefix_states(core: nn.Module, images: torch.Tensor, upto_block: int, batch_size: int,
                  cache_dir: Path | None, device: torch.device | None = None,
                  precision: str = "fp32") -> dict[str, torch.Tensor]:
    """Cached ``forward_prefix(images, upto_block)``; computed and stored on first use, then
    placed on ``device`` (default: the CPU) in the compute precision."""
    device = device or torch.device("cpu")
    if len(images) == 0:
        empty = compute_prefix(core, images[:1].new_zeros((1, *images.shape[1:])), upto_block,
                               1, device, precision)
        return place_cache({key: value[:0] for key, value in empty.items()}, device, precision)
    key = prefix_key(core, images, upto_block, device.type, precision)
    memory_key = f"{key}@{device}"
    path = Path(cache_dir) / f"prefix-{key}.safetensors" if cache_dir else None
    if memory_key in _MEMORY:
        if path is not None and not path.is_file():  # a run's cache folder gets its copy
            _save(_MEMORY[memory_key], path)
        return _MEMORY[memory_key]
    if path is not None and path.is_file():
        states = load_file(str(path))
    else:
        states = compute_prefix(core, images, upto_block, batch_size, device, precision)
        if path is not None:
            _save(states, path)
    states = place_cache(states, device, precision)
    if len(_MEMORY) >= _MEMORY_LIMIT:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[memory_key] = states
    return states


def _save(states: dict[str, torch.Tensor], path: Path) -> None:
    """Atomically: another process reading the folder never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in states.items()}, str(partial))
    os.replace(partial, path)


def memory_usage() -> dict[str, object]:
    """What the in-process copies hold: bytes, dtypes, devices, pinned (benchmarks report it)."""
    tensors = [t for states in _MEMORY.values() for t in states.values()]
    host = [t for t in tensors if t.device.type == "cpu"]
    return {"entries": len(_MEMORY),
            "bytes": int(sum(t.numel() * t.element_size() for t in tensors)),
            "dtypes": sorted({str(t.dtype) for t in tensors}),
            "devices": sorted({str(t.device) for t in tensors}),
            "host_pinned": bool(host) and all(t.is_pinned() for t in host)}


def clear_memory() -> None:
    """Forget in-process copies (the disk cache stays)."""
    _MEMORY.clear()
