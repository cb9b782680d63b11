"""What travels between the ServerApp and the ClientApps, and how it is checked.

A payload (``dict[str, Tensor]``, the federated core's unit of exchange) travels as a Flower
``ArrayRecord`` keyed by parameter name, so Flower's own machinery (the DP clipping mod, message
size accounting) sees real arrays. Byte counts written to ``comm.jsonl`` come from the core's one
serialization path (``duallora.federated.serialization.encode``), so a Flower run and an
in-process run report the same sizes.

Record names used in messages:
- ``arrays``: the payload (train: global parts down and up; evaluate: global parts down),
- ``config``: round number, run key and other instructions (down) or client identity (up),
- ``metrics``: numbers the client reports (up), including ``num-examples``,
- ``predictions``: subject ids and probabilities for the run directory (up, evaluate only).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from duallora.federated.serialization import Payload, encode

ARRAYS, CONFIG, METRICS, PREDICTIONS = "arrays", "config", "metrics", "predictions"
NUM_EXAMPLES = "num-examples"


def payload_to_record(payload: Payload) -> ArrayRecord:
    """Tensors -> ArrayRecord, in sorted key order (the same order on every side)."""
    return ArrayRecord({name: Array(payload[name].detach().to("cpu").contiguous().numpy())
                        for name in sorted(payload)})


def record_to_payload(record: ArrayRecord) -> Payload:
    """ArrayRecord -> tensors (copies, so the caller may modify them)."""
    return {name: torch.from_numpy(np.array(array.numpy(), copy=True))
            for name, array in record.items()}


def payload_bytes(payload: Payload) -> int:
    """Size of the payload in the kit's wire format (what ``comm.jsonl`` reports)."""
    return len(encode(payload)) if payload else 0


def content_names(content: RecordDict) -> list[str]:
    """Every name a message carries: record names and the keys inside each record.

    The ServerApp logs these for every reply it receives, so a test (or an auditor) can check
    that nothing private ever reached the server.
    """
    names: list[str] = []
    for record_name, record in content.items():
        names.append(record_name)
        if isinstance(record, ArrayRecord | ConfigRecord | MetricRecord):
            names.extend(f"{record_name}/{key}" for key in record)
    return names


def forbidden_names(names: Iterable[str], private_keys: Iterable[str]) -> list[str]:
    """Names that must never reach the server: the strategy's private parameters, wherever
    in a message they appear (``record/key`` or a bare record name)."""
    private = set(private_keys)
    return sorted(name for name in names if name.split("/", 1)[-1] in private)
