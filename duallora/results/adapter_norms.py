"""How large each LoRA update is: ``||s B A||_F`` per block, module, adapter and owner.

The size of the weight change ``dW = s * B @ A`` (``s = alpha / rank``) shows where an adapter
acts. For Med-DualLoRA it separates what the federation learned together (the global adapter,
one per server) from what each site learned alone (its local adapter). ``NormLogger`` is called
by the training loop after every round and appends those norms to ``RUN_DIR/adapter_norms.csv``
(it lives with the loop, ``duallora.federated.norm_logger``); here is the arithmetic and the
table's columns, which the plots read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

NORM_COLUMNS = ["round", "owner", "adapter", "block", "module", "norm"]
LORA_KEY = re.compile(
    r"encoder\.blocks\.(?P<block>\d+)\.(?P<module>[\w.]+?)\.lora_(?P<factor>[AB])\."
    r"(?P<adapter>\w+)\.weight$")


def lora_norms(payload: Mapping[str, torch.Tensor], scales: Mapping[str, float]
               ) -> list[dict[str, Any]]:
    """One row per (adapter, block, module) whose A and B factors are both in ``payload``."""
    factors: dict[tuple[str, int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in payload.items():
        match = LORA_KEY.search(key)
        if match:
            slot = (match["adapter"], int(match["block"]), match["module"])
            factors.setdefault(slot, {})[match["factor"]] = tensor
    rows = []
    for (adapter, block, module), pair in sorted(factors.items()):
        if "A" in pair and "B" in pair:
            delta = scales.get(adapter, 1.0) * (pair["B"].double() @ pair["A"].double())
            rows.append({"adapter": adapter, "block": block, "module": module,
                         "norm": float(torch.linalg.matrix_norm(delta))})
    return rows
