"""FedDPA's instance-wise dynamic weighting of a global and a local LoRA adapter.

Yang et al., "Dual-Personalizing Adapter for Federated Foundation Models", NeurIPS 2024
(public code: github.com/Lydia-yang/FedDPA). At inference each test instance ``x`` gets a
weight ``alpha(x) = max_weight * mean_k cos(z(x), z(x_k))`` over ``k`` training instances of the
site, where ``z`` is the model's representation with only the local adapter active; every
adapted layer then computes ``W0 x + alpha * dW_global x + (1 - alpha) * dW_local x`` (in the
public code ``max_weight`` is 0.5 and ``k`` is 5 randomly drawn training instances). While the
local adapter trains, the same mix holds with fixed weights (the frozen global adapter at
``1 - a``, the local at ``a``, ``a = 0.5`` there).

What differs here, and why: ``z`` is the pair of vectors the classification heads read (the mean
patch token and the CLS token, standardized as the heads see them) instead of an LLM's last
hidden state: the raw vectors of a 3D cardiac MRI differ between subjects by a few percent only,
so their cosine similarity is near 1 for every pair. A negative similarity (possible after
standardization) gives ``alpha = 0`` rather than a negative weight on the global adapter.

This module holds the pieces that do not depend on the client loop: the adapter weights as a
context manager, the weights from representations, and the representations themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from duallora.federated.client_model import ClientModel
from duallora.federated.cohort import SplitData
from duallora.federated.head_norm import raw_head_inputs


@contextmanager
def adapter_weights(module: nn.Module, weights: Mapping[str, float]) -> Iterator[None]:
    """Multiply each named adapter's LoRA scaling (``alpha / r``) by its weight, in every LoRA
    layer of ``module``, for the duration of the block (the scalings are restored after)."""
    saved: list[tuple[dict[str, float], str, float]] = []
    for layer in module.modules():
        if not isinstance(layer, LoraLayer):
            continue
        for name, weight in weights.items():
            if name in layer.scaling:
                saved.append((layer.scaling, name, layer.scaling[name]))
                layer.scaling[name] = layer.scaling[name] * float(weight)
    try:
        yield
    finally:
        for scaling, name, value in reversed(saved):
            scaling[name] = value


def instance_weights(test: torch.Tensor, reference: torch.Tensor, max_weight: float,
                     n_reference: int, generator: torch.Generator) -> torch.Tensor:
    """``alpha_i = max_weight * mean_{j in S_i} cos(test_i, reference_j)``, clipped at 0.

    ``test`` (N, d) and ``reference`` (M, d) are representations; ``S_i`` are ``n_reference``
    rows of ``reference`` drawn without replacement for each test row from ``generator`` (all
    ``M`` rows when ``n_reference`` is 0 or at least ``M``). Returns (N,) float64 weights of the
    global adapter, in ``[0, max_weight]``.
    """
    if reference.shape[0] == 0:
        raise ValueError("FedDPA's weighting needs at least one training instance")
    test64 = nn.functional.normalize(test.reshape(len(test), -1).double(), dim=1)
    ref64 = nn.functional.normalize(reference.reshape(len(reference), -1).double(), dim=1)
    similarity = test64 @ ref64.T                       # (N, M) cosine similarities
    m = ref64.shape[0]
    if n_reference == 0 or n_reference >= m:
        mean = similarity.mean(dim=1)
    else:
        rows = [similarity[i, torch.randperm(m, generator=generator)[:n_reference]].mean()
                for i in range(len(similarity))]
        mean = torch.stack(rows) if rows else similarity.new_zeros(0)
    return (max_weight * mean).clamp(min=0.0, max=max_weight)


@torch.no_grad()
def representations(model: ClientModel, split: SplitData, from_block: int | None,
                    batch_size: int, adapters: tuple[str, ...]) -> torch.Tensor:
    """(N, 2 d): the heads' standardized inputs of ``split`` with only ``adapters`` active
    (FedDPA: the local adapter alone). The strategy's adapters are active again afterwards."""
    core = model.core
    model.use_adapters(adapters)
    try:
        raw = raw_head_inputs(model, split, from_block, batch_size)
    finally:
        model.use_adapters(model.strategy.adapters)
    standardized = (raw - core.head_input_mean.float()) / core.head_input_std.float()
    return standardized.reshape(len(raw), -1)
