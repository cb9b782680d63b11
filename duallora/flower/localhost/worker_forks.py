"""Site workers forked from one warm parent: how ``flower-local`` starts them on one machine.

Runs in: its own fork-server process, started by the launcher; each forked child
becomes one site worker (``site/worker.py``).

A site worker spends most of its start-up importing torch, PEFT and the kit (about 6 CPU-s
here, of a worker that trains a few quick rounds in about as much again). ``flower-local``
starts one per site, and again after a fault, so on one machine this parent imports them once
and forks a child per worker. Each child then runs exactly ``duallora site-worker
--node-config FILE`` (the same CLI function, exit codes and messages) in its own session, with
its own log and environment: the launcher signals, supervises and stops it as any process it
started. A real site runs ``duallora site-worker`` itself (docs/DEPLOYMENT.md, "Real sites
with Flower").

The parent only imports and forks: it starts no thread, runs no torch operation and never
initializes CUDA, so the children inherit no thread pool, lock or device context (a child may
still use a GPU: ``device`` in its node config). It talks with the launcher over its stdin
and stdout, one JSON object per line: first ``{"ready": true}`` once the imports are done,
then for each request ``{"node-config": PATH, "log": PATH, "env": {...}}`` the reply
``{"pid": PID}``. It ignores SIGCHLD, so the kernel reaps its children, and the launcher
watches them through ``/proc``.
``DUALLORA_WORKER_FORKS=0`` makes ``flower-local`` start every worker as its own
``duallora site-worker`` process instead.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

# What a site worker imports while it serves a run: imported here once, before any fork.
PRELOAD = ("duallora.base.command_line", "duallora.flower.site.worker",
           "duallora.flower.site.handlers",
           "duallora.federated.client", "duallora.federated.prepare",
           "duallora.federated.export", "duallora.federated.head_norm",
           "duallora.federated.last_validation", "duallora.federated.loop",
           "duallora.results.evaluation", "duallora.data", "safetensors.torch")


def enabled() -> bool:
    """Whether ``flower-local`` forks its site workers (``DUALLORA_WORKER_FORKS``, default on)."""
    return os.environ.get("DUALLORA_WORKER_FORKS", "1").strip().lower() not in ("0", "false",
                                                                                 "no", "off")


def proc_stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (state, ppid, pgrp, ...; ``proc(5)`` field 3
    is index 0), None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of process ``pid``, None if there is none."""
    fields = proc_stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[19]))


class ForkedChild:
    """The launcher's handle on a forked worker: the part of ``subprocess.Popen`` it uses.

    Not the parent, the launcher cannot wait for the child; it reads ``/proc`` (and the
    child's start time, so a reused pid never looks alive). The exit code is not known here:
    ``poll`` gives -1 once the child is gone (its log says why).
    """

    def __init__(self, pid: int):
        self.pid = pid
        state = _proc_state(pid)
        self._started = state[1] if state else None
        self.returncode: int | None = None
        self.stdin = self.stdout = None  # as a Popen without pipes

    def poll(self) -> int | None:
        if self.returncode is None:
            state = _proc_state(self.pid)
            if state is None or state[0] in ("Z", "X") or state[1] != self._started:
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"site worker {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        return self.returncode


def _run_child(request: dict[str, Any]) -> NoReturn:
    """In the child: become a fresh ``duallora site-worker`` process, run it, exit."""
    code = 1
    try:
        os.setsid()  # its own session and process group, as the launcher gives every process
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        # stdin, stdout and stderr become /dev/null and the log: the child keeps no end of the
        # parent's pipes to the launcher
        for source, target in ((devnull, 0), (log, 1), (log, 2)):
            os.dup2(source, target)
        os.close(log)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(request["env"])
        from duallora.base.command_line import run_guarded
        from duallora.flower.site.worker import run_worker

        code = run_guarded("duallora site-worker",
                           lambda: run_worker(Path(request["node-config"]), {}))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 - a child must never return into the parent's loop
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def serve() -> int:
    """The parent: import once, then fork one child per request line until stdin closes."""
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        print(json.dumps({"pid": pid}), flush=True)
    return 0


if __name__ == "__main__":  # started by the launcher: python -m duallora.flower.localhost...
    sys.exit(serve())
