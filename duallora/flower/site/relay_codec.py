"""How a Flower message's content crosses the local socket between the relay and the site worker.

Runs in: both ends of the site's socket: the ClientApp process and the site worker.

Only the standard library and ``flwr`` are imported here, because the ClientApp (the relay,
``client_app``) imports this module in every short-lived ``flwr-clientapp`` process: torch and
the kit's model code stay in the long-lived worker (``worker``).

One frame is ``!II`` (header length, body length), a JSON header and a body of raw array bytes.
The header names each record of the ``RecordDict`` with its kind (``arrays``, ``config``,
``metrics``) and items; an array item gives dtype, shape, stype and its slice of the body, so
arrays travel as the exact bytes Flower holds (no pickling, nothing executable). Byte strings in
config records travel base64-encoded.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

_PREFIX = struct.Struct("!II")
MAX_HEADER = 256 * 1024 * 1024


def _plain(value: Any) -> Any:
    """A config value as JSON (bytes and lists of bytes marked so they come back as bytes)."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_unplain(item) for item in value]
    return value


def encode_content(content: RecordDict, extra: dict[str, Any] | None = None) -> bytes:
    """``content`` (and a JSON-able ``extra`` header) as one frame."""
    records = []
    chunks: list[bytes] = []
    offset = 0
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            items = []
            for key, array in record.items():
                data = bytes(array.data)
                items.append({"key": key, "dtype": array.dtype, "shape": list(array.shape),
                              "stype": array.stype, "offset": offset, "length": len(data)})
                chunks.append(data)
                offset += len(data)
            records.append({"name": name, "kind": "arrays", "items": items})
        elif isinstance(record, ConfigRecord | MetricRecord):
            kind = "config" if isinstance(record, ConfigRecord) else "metrics"
            records.append({"name": name, "kind": kind,
                            "items": {key: _plain(value) for key, value in record.items()}})
        else:
            raise TypeError(f"record {name!r}: {type(record).__name__} cannot be relayed")
    header = json.dumps({"records": records, "extra": extra or {}}).encode()
    body = b"".join(chunks)
    return _PREFIX.pack(len(header), len(body)) + header + body


def decode_content(frame: bytes) -> tuple[RecordDict, dict[str, Any]]:
    """A frame back into (``RecordDict``, extra header)."""
    header_len, body_len = _PREFIX.unpack_from(frame)
    start = _PREFIX.size
    header = json.loads(frame[start:start + header_len])
    body = memoryview(frame)[start + header_len:start + header_len + body_len]
    content = RecordDict()
    for record in header["records"]:
        if record["kind"] == "arrays":
            content[record["name"]] = ArrayRecord({
                item["key"]: Array(dtype=item["dtype"], shape=tuple(item["shape"]),
                                   stype=item["stype"],
                                   data=bytes(body[item["offset"]:item["offset"]
                                                   + item["length"]]))
                for item in record["items"]})
        elif record["kind"] == "config":
            content[record["name"]] = ConfigRecord(
                {key: _unplain(value) for key, value in record["items"].items()})
        else:
            content[record["name"]] = MetricRecord(dict(record["items"]))
    return content, header["extra"]


def send_frame(sock: socket.socket, frame: bytes) -> None:
    sock.sendall(frame)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        chunk = sock.recv(min(size - len(parts), 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection mid-frame")
        parts += chunk
    return bytes(parts)


def recv_frame(sock: socket.socket) -> bytes:
    """One whole frame (raises ``ConnectionError`` if the peer goes away)."""
    prefix = _read_exact(sock, _PREFIX.size)
    header_len, body_len = _PREFIX.unpack(prefix)
    if header_len > MAX_HEADER:
        raise ConnectionError(f"frame header of {header_len} bytes: not a site-worker frame")
    return prefix + _read_exact(sock, header_len + body_len)
