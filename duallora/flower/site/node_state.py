"""A site's private state between rounds: in the site worker's memory and in a node-local folder.

Runs in: the site worker process.

What a client keeps between rounds is its private payload (for Med-DualLoRA the local adapter,
plus the head when it is kept private). The federated core creates the optimizer fresh every
round and derives every random draw from ``(seed, round, client)``, so the private payload is
the whole memory of a client. It is kept twice:

- in a ``RecordDict`` per run that the long-lived site worker (``worker``) keeps in
  memory across the messages of a run, the fast path;
- in ``STATE_DIR/runs/<run key>/private-round-NNNN.safetensors`` on the site's disk, written
  atomically after every round, so a worker or SuperNode that is stopped and started again
  (new process, empty memory) picks up where it was.

The server never sees these tensors; it only says which round's state a request should start
from (the last round in which this site trained and the server kept the result). Every round
is kept on disk because the final test uses the state of each site's best validation round.
``events.jsonl`` in the same folder records where each request's state came from; it stays on
the site.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from duallora.federated.serialization import Payload, decode, encode
from duallora.flower.wire import payload_to_record, record_to_payload

STATE_RECORD, META_RECORD = "private-state", "private-meta"
_FILE = re.compile(r"private-round-(\d{4,})\.safetensors$")


@dataclass
class PrivateState:
    """The private payload a client trained up to round ``round`` (0: nothing yet)."""

    round: int
    payload: Payload
    source: str                      # "memory", "disk" or "fresh"


class NodeStateStore:
    """The node-local folder of one run on one site."""

    def __init__(self, state_dir: Path | str, run_key: str):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", run_key):
            raise ValueError(f"run key {run_key!r} is not a safe folder name")
        self.folder = Path(state_dir) / "runs" / run_key
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, round_idx: int) -> Path:
        return self.folder / f"private-round-{round_idx:04d}.safetensors"

    def saved_rounds(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.folder.iterdir()
                      if (m := _FILE.match(p.name)))

    def save(self, round_idx: int, payload: Payload) -> Path:
        """Write atomically (temp file + rename) and keep only the newest rounds."""
        target = self.path(round_idx)
        blob = encode(payload)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
        return target

    def load(self, round_idx: int) -> PrivateState | None:
        """The state saved after round ``round_idx``, if this folder has it."""
        path = self.path(round_idx)
        if not path.is_file():
            return None
        return PrivateState(round_idx, decode(path.read_bytes()), "disk")

    def log_event(self, **fields: object) -> None:
        """Append one JSON line to the site's own ``events.jsonl`` (never sent anywhere)."""
        fields = {"time": round(time.time(), 3), **fields}
        with (self.folder / "events.jsonl").open("a") as handle:
            handle.write(json.dumps(fields, sort_keys=True) + "\n")

    def events(self) -> list[dict]:
        path = self.folder / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def payload_digest(payload: Payload) -> str:
    """A short fingerprint of a payload (for the site's event log and for tests)."""
    return hashlib.sha256(encode(payload)).hexdigest()[:16] if payload else "empty"


def remember(state: RecordDict, run_key: str, round_idx: int, payload: Payload) -> None:
    """Keep the private payload in the node's Flower context (fast path between messages)."""
    state[STATE_RECORD] = payload_to_record(payload)
    state[META_RECORD] = ConfigRecord({"run-key": run_key, "round": round_idx})


def recall(state: RecordDict, run_key: str, round_idx: int) -> PrivateState | None:
    """The private payload held in the node context, if it is this run's round ``round_idx``."""
    meta = state.get(META_RECORD)
    arrays = state.get(STATE_RECORD)
    if not isinstance(meta, ConfigRecord) or not isinstance(arrays, ArrayRecord):
        return None
    if meta.get("run-key") != run_key or int(meta.get("round", -1)) != round_idx:
        return None
    return PrivateState(round_idx, record_to_payload(arrays), "memory")


class MissingPrivateStateError(RuntimeError):
    """The site lost the private state a request builds on (memory and folder)."""


def private_for_round(state: RecordDict, store: NodeStateStore, round_idx: int) -> PrivateState:
    """The private state after round ``round_idx`` (0: none yet): memory first, then disk."""
    if round_idx <= 0:
        return PrivateState(0, {}, "fresh")
    found = recall(state, store.folder.name, round_idx) or store.load(round_idx)
    if found is None:
        raise MissingPrivateStateError(
            f"private state of round {round_idx} is neither in this node's memory nor in "
            f"{store.folder}; the site cannot continue this run without it")
    return found
