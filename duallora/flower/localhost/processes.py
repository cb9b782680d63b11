"""The processes of a localhost federation: each in its own process group, torn down always.

Runs in: the launcher's process.

Also what starting them needs on this machine: free loopback ports, the Flower executables of
this environment and their environment variables.

Runs in the launcher's process (``duallora flower-local``). Each Flower process spawns
children (SuperExec, app processes), so every process we start gets its own process group, and
teardown signals the whole group, first politely (SIGTERM, which makes a SuperNode deregister)
and then with SIGKILL. ``ForkServerProcess`` is the parent the site workers are forked from
(``worker_forks``); ``ForkedWorker`` one forked site worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from duallora.errors import KitError
from duallora.flower.localhost import worker_forks

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def flower_executable(name: str) -> str:
    """A Flower console script from the environment running this Python (the kit's venv)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise KitError(f"{name} not found beside {sys.executable} nor on PATH; install flwr "
                       "into this environment (pip install 'flwr>=1.20')")
    return found


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for one Flower process: a private FLWR_HOME, no telemetry or update checks
    (sites are often offline), never installing app dependencies (every site runs the kit from
    its own, already installed environment), and a short SuperExec poll interval."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
        "PYTHONUNBUFFERED": "1",
    })
    # All sites share this machine's cores: one thread per process avoids the heavy slowdown of
    # oversubscribed OpenMP threads (a real site sets its own value, which is kept).
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a process log, ready to paste into an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "    (no log written)"
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in kept) or "    (log is empty)"


@dataclass
class ManagedProcess:
    """One process we started, in its own process group, logging to a file."""

    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen | None = None
    _log_file: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603 - fixed executables, no shell
            self.command, env=self.env, start_new_session=True, **self._streams())

    def _streams(self) -> dict[str, Any]:
        """Popen's stream arguments: no input, stdout and stderr into the log."""
        return {"stdin": subprocess.DEVNULL, "stdout": self._log_file,
                "stderr": subprocess.STDOUT}

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def describe_failure(self, what: str) -> str:
        return f"{what}: {self.name} {self.state_text()}; last lines of {self.log_path}:\n" \
               f"{log_tail(self.log_path)}"

    def state_text(self) -> str:
        code = self.popen.poll() if self.popen else None
        return f"exited with code {code}" if code is not None else "is still running"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole process group, wait, then SIGKILL whatever is left in it."""
        stop_all([self], grace)


@dataclass
class ForkServerProcess(ManagedProcess):
    """The warm parent that forks the site workers (``worker_forks``): one per federation.

    Its stdin and stdout are pipes to the launcher (requests and replies, one JSON line each),
    its stderr is its log.
    """

    ready: bool = False    # it said it has imported everything
    _pending: bytes = b""  # what it wrote after the last complete line

    def start(self) -> None:
        self.ready, self._pending = False, b""
        super().start()

    def _streams(self) -> dict[str, Any]:
        return {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "bufsize": 0,
                "stderr": self._log_file}

    def wait_ready(self, timeout: float) -> None:
        """Until it has imported everything (at once if it said so before)."""
        if not self.ready:
            if not self.reply(timeout).get("ready"):
                raise KitError(self.describe_failure("the fork server did not get ready"))
            self.ready = True

    def reply(self, timeout: float) -> dict[str, Any]:
        """The next JSON line it writes; raise if it dies or stays silent for ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            if not self.alive():
                raise KitError(self.describe_failure("the site workers' fork server stopped"))
            left = deadline - time.monotonic()
            if left <= 0:
                raise KitError(self.describe_failure(
                    f"the site workers' fork server did not answer within {timeout:.0f} s"))
            readable, _, _ = select.select([self.popen.stdout], [], [], min(left, 0.5))
            if readable:
                self._pending += os.read(self.popen.stdout.fileno(), 4096)
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def fork(self, node_config: Path, log_path: Path, env: dict[str, str]
             ) -> worker_forks.ForkedChild:
        request = {"node-config": str(node_config), "log": str(log_path), "env": env}
        self.popen.stdin.write((json.dumps(request) + "\n").encode())
        return worker_forks.ForkedChild(int(self.reply(30.0)["pid"]))


@dataclass
class ForkedWorker(ManagedProcess):
    """A site worker forked by a ``ForkServerProcess``: ``command`` is the equivalent
    ``duallora site-worker`` command line (the child runs that CLI function)."""

    server: ForkServerProcess | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.popen = self.server.fork(Path(self.command[-1]), self.log_path, self.env)

    def state_text(self) -> str:
        return "is still running" if self.alive() else "has exited"


def stop_all(processes: list[ManagedProcess], grace: float = 5.0) -> None:
    """Stop several processes together: SIGTERM every group at once (a SuperNode uses it to
    deregister), wait up to ``grace`` seconds for all of them, then SIGKILL what is left."""
    started = [proc for proc in processes if proc.popen is not None]
    groups = [proc.popen.pid for proc in started]  # start_new_session: group id = leader pid
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc, pgid in zip(started, groups, strict=True):
        _wait_group_gone(pgid, max(0.0, deadline - time.monotonic()))
        if proc.popen.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc, pgid in zip(started, groups, strict=True):
        _signal_group(pgid, signal.SIGKILL)
        proc.popen.wait()
        _wait_group_gone(pgid, grace)
        for pipe in (proc.popen.stdin, proc.popen.stdout):  # the fork server's
            if pipe is not None:
                pipe.close()
        if proc._log_file is not None:
            proc._log_file.close()
            proc._log_file = None
        proc.popen = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists (zombies excluded)."""
    for entry in Path("/proc").glob("[0-9]*"):
        fields = worker_forks.proc_stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.1)
