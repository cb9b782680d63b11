"""Training compute per strategy, in FLOPs, counted (not timed) so it is the same on any machine.

Strategies differ in what a training step runs (the prefix cache skips the frozen blocks, full
block weights cost more backward work than LoRA factors) and sites take very different numbers
of steps, so rounds alone do not compare their cost. PyTorch's ``FlopCounterMode`` counts the
matrix multiplications and convolutions of one training step on one subject (forward through
what the step runs, backward to the trained parameters); the run's total is that times the
subjects processed (``n_examples x local_epochs`` per site and round, from ``metrics.csv``).
Element-wise work (norms, activations, the optimizer) is not counted: it is small next to the
matmuls and convolutions.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from duallora.base.config import TrainConfig
from duallora.federated.client import set_mode
from duallora.federated.client_model import ClientModel, model_input_size
from duallora.federated.prepare import use_prefix_cache


def train_flops_per_subject(config: TrainConfig, model: ClientModel) -> int:
    """FLOPs of one subject's forward + backward in a training step of this run."""
    image_size, _ = model_input_size(config)
    x = torch.zeros(1, model.core.n_frames, *image_size)
    upto = use_prefix_cache(config, model)
    with torch.no_grad():
        inputs = {"x": x} if upto is None else model.core.forward_prefix(x, upto)
    model.set_state(None, None)
    set_mode(model, training=True)
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model.forward(inputs, upto)
        logits.sum().backward()
    set_mode(model, training=False)
    model.module.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())
