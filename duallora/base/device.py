"""Where a run computes (``--device``) and in which precision (``--precision``).

Why one module: every place that runs the model (training step, evaluation, the one-off prefix
computation, the heads' feature statistics) must agree on the device and on the autocast
precision, and the rule "only the arithmetic changes" must hold everywhere: master weights,
AdamW state, payloads, checkpoints and everything that travels stay float32 on the host, so
the wire format and the byte counts in ``comm.jsonl`` are the same for every device and
precision. At ``--device cpu --precision fp32`` every helper here is a no-op (no copy, no
autocast), which keeps the CPU results byte-identical to the kit before devices existed.

GPU determinism: on CUDA ``configure_determinism`` sets ``CUBLAS_WORKSPACE_CONFIG`` (when the
user has not), asks PyTorch for deterministic algorithms (warning, not failing, on the few ops
that have none), turns off cuDNN autotuning and, at fp32, TF32 (so fp32 means fp32). See
docs/GPU.md for what is and is not bit-identical between CPU and GPU.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from duallora.base.config import check_device_spec, check_precision
from duallora.errors import KitError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CUBLAS_WORKSPACE = ":4096:8"  # what PyTorch's reproducibility notes ask for (CUDA >= 10.2)
# Share of the free GPU memory the prefix cache may take (the rest is for training itself).
DEVICE_CACHE_SHARE = 0.5


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda[:N]`` must exist."""
    check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KitError(f"--device {spec}: no CUDA GPU is visible to PyTorch (use --device "
                           "cpu, or install a CUDA build of torch)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise KitError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) "
                           "visible")
    return device


def configure_determinism(device: torch.device, precision: str) -> None:
    """Make CUDA results repeatable for a seed where PyTorch allows it (no-op on the CPU)."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if precision == "fp32":  # fp32 means fp32: TF32 would round matmul inputs to 10 bits
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """Autocast in ``precision`` for forward passes (fp32: no autocast at all)."""
    check_precision(precision)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def to_compute(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Model inputs on ``device`` as float32 (a cache stored in bf16 is upcast per batch, so
    the model sees the same kind of input with and without the cache). Tensors already there
    in float32 are returned as they are (no copy)."""
    return {key: value.to(device=device, dtype=torch.float32, non_blocking=True)
            if value.is_floating_point() else value.to(device, non_blocking=True)
            for key, value in inputs.items()}


def storage_dtype(precision: str) -> torch.dtype:
    """The dtype the prefix cache is stored in: the compute precision (bf16 halves it)."""
    check_precision(precision)
    return DTYPES[precision]


def place_cache(states: dict[str, torch.Tensor], device: torch.device, precision: str,
                ) -> dict[str, torch.Tensor]:
    """Prefix states in the compute precision, on ``device`` when they fit in
    ``DEVICE_CACHE_SHARE`` of its free memory, otherwise in host memory (pinned on CUDA, so
    each batch's copy to the GPU is asynchronous). fp32 on the CPU: returned as they are."""
    dtype = storage_dtype(precision)
    states = {k: v.to(dtype) if v.is_floating_point() else v for k, v in states.items()}
    if device.type != "cuda":
        return {k: v.to(device) for k, v in states.items()}
    size = sum(v.numel() * v.element_size() for v in states.values())
    free, _ = torch.cuda.mem_get_info(device)
    if size <= DEVICE_CACHE_SHARE * free:
        return {k: v.to(device) for k, v in states.items()}
    return {k: v.cpu().pin_memory() for k, v in states.items()}


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A float32-preserving host copy of a tensor (what payloads and checkpoints hold)."""
    return tensor.detach().to("cpu", copy=True)


class OptimizerStep:
    """zero_grad, backward, (gradient clipping,) step; with a GradScaler for fp16 on CUDA (bf16
    and fp32 need none). Without a scaler it is exactly the plain calls, in the plain order."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, precision: str,
                 clip_grad: float | None = None,
                 clip_params: list[torch.nn.Parameter] | None = None):
        self.optimizer = optimizer
        self.clip_grad = clip_grad
        # the clipped set, in the caller's order (the norm's summation order is part of the
        # result): default every parameter the optimizer holds
        self.clip_params = clip_params
        self.scaler = (torch.amp.GradScaler("cuda")
                       if precision == "fp16" and device.type == "cuda" else None)

    def _clip(self) -> None:
        if self.clip_grad is not None:
            params = self.clip_params or [p for group in self.optimizer.param_groups
                                          for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self._clip()
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if self.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            self._clip()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def peak_memory(device: torch.device) -> int | None:
    """Peak bytes allocated on a CUDA device since the last reset (None on the CPU)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
