"""The one wire format for every federated message: a safetensors blob.

A payload is ``dict[str, Tensor]`` keyed by parameter name. ``encode`` turns it into bytes (what a
server or client would send over the network, and what ``comm.jsonl`` counts), ``decode`` turns
bytes back. The in-process loop and the Flower apps both go through these two functions, so the
byte counts reported by either are the same.
"""

from __future__ import annotations

import torch
from safetensors.torch import load, save

Payload = dict[str, torch.Tensor]


def encode(payload: Payload) -> bytes:
    """Serialize a payload (tensors are copied to contiguous CPU memory first)."""
    return save({name: tensor.detach().to("cpu").contiguous() for name, tensor in payload.items()})


def decode(blob: bytes) -> Payload:
    """Inverse of ``encode``."""
    return load(blob)


def roundtrip(payload: Payload) -> tuple[Payload, int]:
    """Encode and decode, returning what the receiver sees and the message size in bytes."""
    blob = encode(payload)
    return decode(blob), len(blob)
