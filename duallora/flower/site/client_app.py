"""The Flower ClientApp: a thin relay from the SuperNode to the site's long-lived worker.

Runs in: a ClientApp process, one per message, started by the site's SuperNode
(its SuperExec).

A SuperNode is one site. Its node config says who it is and where its files are::

    client-name = "Siemens"          # the vendor this site holds (metadata.csv's vendor column)
    data-dir    = "/data/harmonized"  # the site's harmonized cohort (python -m data_prep harmonize)
    state-dir   = "/data/duallora"    # node-local: worker socket, private adapters, prefix cache
    device      = "cuda:1"            # optional: this site's own GPU (overrides the run's
                                      # --device; precision stays the run's, one protocol)

Flower 1.42 runs every message in a fresh ``flwr-clientapp`` process. This module therefore
imports only ``flwr`` and the standard library (no torch, no model): each handler forwards the
message type and content over the unix socket ``STATE_DIR/worker.sock`` to the site worker
(``duallora site-worker``, ``worker``), which does the work with the model and data it
keeps in memory, and relays the worker's reply back. If the worker is not there (yet, or
again), the relay waits up to ``worker-wait`` seconds (node config; default 120) and asks
again; a request is deterministic from the run's seed and the site's saved state, so asking a
restarted worker again gives the same answer. A worker that cannot answer yields an error reply.

Central DP: Flower's ``fixedclipping_mod`` clips the training reply here, when the server asks.
"""

from __future__ import annotations

import hashlib
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod

from duallora.flower.protocol import CLIPPING_NORM_KEY, CONFIG
from duallora.flower.site.relay_codec import decode_content, encode_content, recv_frame, send_frame

SOCKET_NAME = "worker.sock"
MAX_SOCKET_PATH = 100                # sun_path holds 108 bytes on Linux, 104 on macOS
DEFAULT_WORKER_WAIT = 120.0
RETRY_SECONDS = 0.2

app = ClientApp()


def socket_path(state_dir: Path | str) -> Path:
    """Where a site's worker listens; the relay and the worker both call this.

    ``STATE_DIR/worker.sock`` when that fits a unix socket's path limit; for a deeper state
    folder, ``<temp dir>/duallora-<hash of the state folder>.sock`` (the same folder always
    gives the same name; the worker creates it with mode 0600).
    """
    path = Path(state_dir) / SOCKET_NAME
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"duallora-{digest}.sock"


class WorkerUnavailableError(RuntimeError):
    """The site worker did not answer within the node's ``worker-wait``."""


def ask_worker(state_dir: Path, frame: bytes, wait: float) -> bytes:
    """Send one request frame and return the reply frame, waiting for the worker to be there
    (connection refused, socket missing, or the worker went away mid-request)."""
    path = str(socket_path(state_dir))
    deadline = time.monotonic() + wait
    last = "no attempt"
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
                send_frame(sock, frame)
                return recv_frame(sock)
        except (FileNotFoundError, ConnectionError, OSError) as err:
            last = f"{type(err).__name__}: {err}"
        if time.monotonic() > deadline:
            raise WorkerUnavailableError(f"no site worker answered on {path} within {wait:.0f} s "
                                    f"({last}); start it with `duallora site-worker`")
        time.sleep(RETRY_SECONDS)


def relay(msg: Message, context: Context) -> Message:
    """Forward ``msg`` to the site worker; its reply content (or an error reply)."""
    node = dict(context.node_config)
    name = str(node.get("client-name", ""))
    try:
        state_dir = node.get("state-dir")
        if not str(state_dir or "").strip():
            raise ValueError("SuperNode node config lacks state-dir (start it with "
                             "--node-config 'client-name=\"Siemens\" data-dir=\"...\" "
                             "state-dir=\"...\"')")
        frame = encode_content(msg.content, {"message-type": msg.metadata.message_type,
                                             "client-name": name})
        wait = float(node.get("worker-wait", DEFAULT_WORKER_WAIT))
        content, _ = decode_content(ask_worker(Path(str(state_dir)), frame, wait))
    except Exception as err:  # the server logs it as this site's failure, as in-process
        content = RecordDict({CONFIG: ConfigRecord({
            "client-name": name, "error-type": type(err).__name__, "error": str(err)})})
    return Message(content, reply_to=msg)


def optional_clipping(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``fixedclipping_mod`` when the server asks for DP clipping, else a no-op."""
    instructions = msg.content.config_records.get(CONFIG)
    if instructions is not None and CLIPPING_NORM_KEY in instructions:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Which site this node is (the worker reads its metadata.csv)."""
    return relay(msg, context)


@app.query("head_moments")
def head_moments(msg: Message, context: Context) -> Message:
    """Round 0: the site's training-feature moments (computed by the worker)."""
    return relay(msg, context)


@app.train(mods=[optional_clipping])
def train(msg: Message, context: Context) -> Message:
    """One round (with the previous round's validation, when the message carries it)."""
    return relay(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Prediction requests (the last validation and the final test)."""
    return relay(msg, context)
