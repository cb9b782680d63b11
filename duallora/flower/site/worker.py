"""The long-lived site worker: the process that does a site's work for every Flower message.

Runs in: the site worker process (``duallora site-worker``, or forked by
``localhost/worker_forks``), one per site, beside its SuperNode.

Flower 1.42 starts a fresh ``flwr-clientapp`` process for every message. Importing torch,
building the model and loading the cohort in each of them cost several seconds per message, so
the ClientApp is a thin relay (``client_app``) and this worker, started once per site next to
its SuperNode (``duallora site-worker``, or by ``flower-local``), holds torch, the model, the
cohort, the prefix cache and the private state in memory, keyed by run (``SiteCache``).

It listens on a unix socket in the site's state folder (``STATE_DIR/worker.sock``, mode 0600:
only the site's own user can talk to it) and answers one request at a time: a frame
(``relay_codec``) with the message type and content in, a frame with the reply content (or the
error, as data) out. The private state is also written to ``STATE_DIR/runs/<run key>/`` after
every round (``node_state``), so a worker that is stopped and started again resumes there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from duallora.errors import KitError
from duallora.flower.site.client_app import SOCKET_NAME, socket_path  # noqa: F401  (one definition)
from duallora.flower.site.relay_codec import decode_content, encode_content, recv_frame, send_frame


def _limit_threads() -> None:
    """Use what OMP_NUM_THREADS says (the launcher sets 1 per site on a shared machine)."""
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def serve(node_config: dict[str, Any], *, ready: Any = None, log: Any = print) -> None:
    """Answer requests until SIGTERM/SIGINT (``ready()`` is called once listening)."""
    from duallora.flower.site.handlers import Site, SiteCache, error_content, handle

    site = Site.from_node_config(node_config)
    site.state_dir.mkdir(parents=True, exist_ok=True)
    path = socket_path(site.state_dir)
    _limit_threads()
    cache = SiteCache(site)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old_mask)
    server.listen(8)
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True
        server.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"site worker {site.name} (pid {os.getpid()}) listening on {path}")
    if ready is not None:
        ready()
    try:
        while not stop["now"]:
            try:
                conn, _ = server.accept()
            except OSError:
                break
            with conn:
                try:
                    content, extra = decode_content(recv_frame(conn))
                except (ConnectionError, ValueError) as err:
                    log(f"bad request: {err}")
                    continue
                started = time.perf_counter()
                message_type = str(extra.get("message-type", ""))
                asked_for = str(extra.get("client-name", site.name))
                try:
                    if asked_for != site.name:
                        raise KitError(f"this worker serves site {site.name!r}, the SuperNode "
                                       f"relaying to it is {asked_for!r}: check state-dir")
                    reply, status = handle(message_type, content, cache), {"ok": True}
                except Exception as err:  # reported to the server as this site's error
                    reply = error_content(site.name, err)
                    status = {"ok": False, "error-type": type(err).__name__, "error": str(err)}
                log(f"{message_type} in {time.perf_counter() - started:.2f} s "
                    f"({'ok' if status['ok'] else status['error-type']})")
                with contextlib.suppress(OSError):
                    send_frame(conn, encode_content(reply, status))
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log(f"site worker {site.name} stopped")


def read_node_config(path: Path) -> dict[str, Any]:
    """A SuperNode's node-config TOML file (flat ``key = value``)."""
    import tomllib

    try:
        return dict(tomllib.loads(Path(path).read_text()))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise KitError(f"--node-config {path}: {err}") from None


def run_worker(node_config: Path | None, given: dict[str, str | Path | None]) -> int:
    """``duallora site-worker``: the node config file's settings, overridden by those ``given``
    (``client-name``, ``data-dir``, ``state-dir``; None: not given), then serve."""
    node = read_node_config(node_config) if node_config else {}
    for key, value in given.items():
        if value is not None:
            node[key] = str(value)
    missing = [key for key in ("client-name", "data-dir", "state-dir") if not node.get(key)]
    if missing:
        raise KitError(f"site-worker: give --node-config or --{' --'.join(missing)}")
    return main(node)


def main(node_config: dict[str, Any]) -> int:
    def say(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    serve(node_config, log=say)
    return 0


if __name__ == "__main__":  # python -m duallora.flower.site.worker NODE_CONFIG.toml
    sys.exit(main(read_node_config(Path(sys.argv[1]))))
