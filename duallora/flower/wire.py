"""What travels between the ServerApp and the ClientApps, and how it is checked.

Runs in: both sides: the ServerApp process and each site worker (shared).

A payload (``dict[str, Tensor]``, the federated core's unit of exchange) travels as a Flower
``ArrayRecord`` holding one ``Array`` per dtype: that dtype's tensors flattened end to end in
sorted name order, keyed by ``packed:`` and the JSON layout (each tensor's name and shape). Why
not one ``Array`` per tensor: Flower 1.42 moves every ``Array`` (and every chunk of it) as an
object of its own, one gRPC call per object on each of the six hops of a round trip (ServerApp,
SuperLink, SuperNode, ClientApp and back), so a 24-tensor payload cost 49 objects where it now
costs three, and a round's time went to object calls rather than bytes. The arrays are still
real numeric arrays, so Flower's DP clipping mod (``fixedclipping_mod``: the L2 norm of the
whole update, one scale for every element) clips a packed update as it would the tensors one by
one. Byte counts written to ``comm.jsonl`` come from the core's one serialization path
(``duallora.federated.serialization.encode``), so a Flower run and an in-process run report the
same sizes.

Record names used in messages:
- ``arrays``: the payload (train: global parts down and up; evaluate: global parts down),
- ``config``: round number, run key and other instructions (down) or client identity (up),
- ``metrics``: numbers the client reports (up), including ``num-examples``,
- ``predictions``: subject ids and probabilities for the run directory (up, evaluate only).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from duallora.federated.serialization import Payload, encode

PACKED = "packed:"  # an ArrayRecord key holding a layout, not a tensor name


def _packed_key(layout: list[tuple[str, list[int]]]) -> str:
    return PACKED + json.dumps(layout, separators=(",", ":"))


def _layout(key: str) -> list[tuple[str, list[int]]] | None:
    """The (name, shape) list a packed key holds, or None for a plain (one-tensor) key."""
    if not key.startswith(PACKED):
        return None
    return [(str(name), [int(n) for n in shape]) for name, shape in json.loads(key[len(PACKED):])]


def payload_to_record(payload: Payload) -> ArrayRecord:
    """Tensors -> ArrayRecord: one flat Array per dtype (sorted names, the same order on every
    side), keyed by its layout."""
    by_dtype: dict[str, list[str]] = {}
    for name in sorted(payload):
        by_dtype.setdefault(str(payload[name].dtype), []).append(name)
    arrays = {}
    for names in (by_dtype[dtype] for dtype in sorted(by_dtype)):
        tensors = [payload[name].detach().to("cpu").contiguous() for name in names]
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors]).numpy()
        arrays[_packed_key([(name, list(tensor.shape))
                            for name, tensor in zip(names, tensors, strict=True)])] = Array(flat)
    return ArrayRecord(arrays)


def record_to_payload(record: ArrayRecord) -> Payload:
    """ArrayRecord -> tensors (copies, so the caller may modify them). Plain records (one
    Array per tensor, as other Flower apps send) are read too."""
    payload: Payload = {}
    for key, array in record.items():
        values = np.asarray(array.numpy())
        layout = _layout(key)
        if layout is None:
            payload[key] = torch.from_numpy(np.array(values, copy=True))
            continue
        values = values.reshape(-1)
        sizes = [math.prod(shape) for _, shape in layout]
        if sum(sizes) != values.size:
            raise ValueError(f"packed array of {values.size} values, its layout names "
                             f"{sum(sizes)}")
        start = 0
        for (name, shape), size in zip(layout, sizes, strict=True):
            chunk = values[start:start + size].reshape(shape)
            payload[name] = torch.from_numpy(np.array(chunk, copy=True))
            start += size
    return payload


def payload_bytes(payload: Payload) -> int:
    """Size of the payload in the kit's wire format (what ``comm.jsonl`` reports)."""
    return len(encode(payload)) if payload else 0


def content_names(content: RecordDict) -> list[str]:
    """Every name a message carries: record names and the keys inside each record (every
    tensor of a packed array by its own name).

    The ServerApp logs these for every reply it receives, so a test (or an auditor) can check
    that nothing private ever reached the server.
    """
    names: list[str] = []
    for record_name, record in content.items():
        names.append(record_name)
        if isinstance(record, ArrayRecord):
            for key in record:
                layout = _layout(key)
                tensors = [key] if layout is None else [name for name, _ in layout]
                names.extend(f"{record_name}/{name}" for name in tensors)
        elif isinstance(record, ConfigRecord | MetricRecord):
            names.extend(f"{record_name}/{key}" for key in record)
    return names


def forbidden_names(names: Iterable[str], private_keys: Iterable[str]) -> list[str]:
    """Names that must never reach the server: the strategy's private parameters, wherever
    in a message they appear (``record/key`` or a bare record name)."""
    private = set(private_keys)
    return sorted(name for name in names if name.split("/", 1)[-1] in private)
