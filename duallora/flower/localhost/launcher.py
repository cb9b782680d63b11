"""A real Flower federation on this machine: one SuperLink and N SuperNodes on 127.0.0.1.

Runs in: the launcher's process (``duallora flower-local``, notebook 05, the tests).

Every part is a separate operating-system process, exactly as on real sites: ``flower-superlink``
(the server side; it starts its own SuperExec, which starts the ServerApp), one
``flower-supernode`` per client (each starts its own SuperExec, which starts a ClientApp process
per message), one site worker per client next to its SuperNode (``duallora site-worker``: the
long-lived process that holds the site's model, data and private state; each ClientApp relays
its message to it), and the ``flwr run`` command that ships the app and streams its log. The
site workers are forked from one parent that imported torch and the kit once (``worker_forks``;
``fork_workers=False`` starts each as its own ``duallora site-worker`` process).

Why the care about processes: each Flower process spawns children (SuperExec, app processes).
Every process we start gets its own process group, and teardown signals the whole group, first
politely (SIGTERM, which makes a SuperNode deregister) and then with SIGKILL. Teardown runs on
success, on error and on Ctrl-C, so nothing is left running.

By default everything listens on the loopback interface with ``--insecure``. With ``tls`` (a
``tls.TlsMaterial``: CA, SuperLink certificate, one key pair per SuperNode) the SuperLink serves
TLS and authenticates SuperNodes (``--enable-supernode-auth``), every node's public key is
registered (``flwr supernode register``) before it starts, and every node and the ``flwr`` CLI
verify the SuperLink against the CA: the setup of real sites (docs/DEPLOYMENT.md, "Real sites
with Flower").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duallora.errors import KitError
from duallora.flower.flat_toml import ConfigValue, write_flat_toml
from duallora.flower.localhost import worker_forks
from duallora.flower.localhost.processes import (
    LOOPBACK,
    ForkedWorker,
    ForkServerProcess,
    ManagedProcess,
    flower_env,
    flower_executable,
    free_port,
    log_tail,
    port_open,
    stop_all,
)
from duallora.flower.localhost.tls import NodeKey, TlsMaterial

CONNECTION_NAME = "localhost"
FORK_SERVER = "worker-forks"  # its key among a federation's processes


@dataclass
class NodeSpec:
    """One SuperNode: its client name and the node config it starts with."""

    name: str
    node_config: dict[str, ConfigValue]


@dataclass
class FlowerRunResult:
    """What ``flwr run`` left behind: run id, final status text and the streamed log.

    ``app_finished``: the app wrote its finished marker (its own last word). The SuperLink may
    report the run as still running for a few seconds after that; such a run completed.
    """

    run_id: int | None
    status: str
    log_path: Path
    wall_seconds: float
    app_finished: bool = False

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed" or (
            self.app_finished and self.status not in ("finished:failed", "finished:stopped"))


@dataclass
class LocalhostFederation:
    """A SuperLink plus SuperNodes on 127.0.0.1, as a context manager that always tears down.

    ``work_dir`` receives one private FLWR_HOME per process (``homes/``), the process logs
    (``logs/``) and the node-config files. Use ``run_app`` to submit a Flower app.
    """

    work_dir: Path
    nodes: list[NodeSpec]
    startup_timeout: float = 120.0
    superlink_port: int = 0
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    workers: bool = True            # start a site worker next to each SuperNode (and keep it up)
    tls: TlsMaterial | None = None  # TLS + SuperNode authentication (None: --insecure)
    restarts: list[str] = field(default_factory=list)   # workers restarted after dying
    # fork the site workers from one warm parent (``worker_forks``; DUALLORA_WORKER_FORKS=0:
    # one ``duallora site-worker`` process each, as at a real site)
    fork_workers: bool = field(default_factory=worker_forks.enabled)

    def __enter__(self) -> LocalhostFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        self.work_dir = Path(self.work_dir).resolve()
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise KitError(f"SuperNode names must be unique, got {names}")
        self.superlink_port = free_port()
        self._write_cli_config()
        if self.workers and self.fork_workers:
            self.start_fork_server()  # it imports while the SuperLink comes up
        security = ["--insecure"] if self.tls is None else [
            "--ssl-ca-certfile", str(self.tls.ca_cert), "--ssl-certfile",
            str(self.tls.server_cert), "--ssl-keyfile", str(self.tls.server_key),
            "--enable-supernode-auth"]
        link = ManagedProcess(
            "superlink",
            [flower_executable("flower-superlink"), *security, "--host", LOOPBACK,
             "--port", str(self.superlink_port), "--disable-runtime-dependency-installation"],
            self.work_dir / "logs" / "superlink.log", flower_env(self.home("superlink")))
        self.processes["superlink"] = link
        link.start()
        self._wait_listening(link, self.superlink_port)
        if self.tls is not None:
            for node in self.nodes:
                self.register_node(self.tls.nodes[node.name])
        # every site's worker and SuperNode start at once (each takes seconds to come up)
        if self.workers:
            for node in self.nodes:
                self.start_worker(node.name, wait=False)
        started = [(node.name, self.start_node(node.name, wait=False)) for node in self.nodes]
        for name, (proc, port) in started:
            if self.workers:
                self.wait_worker(name)
            self._wait_listening(proc, port)

    def home(self, who: str) -> Path:
        path = self.work_dir / "homes" / who
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write_cli_config(self) -> None:
        """``flwr`` reads its SuperLink connections from ``$FLWR_HOME/config.toml``."""
        (self.home("cli") / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{CONNECTION_NAME}"\n\n'
            f"[superlink.{CONNECTION_NAME}]\n"
            f'address = "{LOOPBACK}:{self.superlink_port}"\n'
            + ("insecure = true\n" if self.tls is None
               else f"root-certificates = {json.dumps(str(self.tls.ca_cert))}\n"))

    def node_spec(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KitError(f"no SuperNode named {name!r} (have {[n.name for n in self.nodes]})")

    def node_config_file(self, name: str) -> Path:
        return write_flat_toml(self.work_dir / "node-config" / f"{name}.toml",
                               self.node_spec(name).node_config)

    def start_node(self, name: str, wait: bool = True) -> Any:
        """Start (or restart, with the same node config) the site ``name``: its worker (if
        not running) and its SuperNode. ``wait=False``: return ``(process, port)`` at once."""
        config_file = self.node_config_file(name)
        if self.workers and not self.worker_alive(name):
            self.start_worker(name, wait=wait)
        port = free_port()
        key = self.tls.nodes.get(name) if self.tls is not None else None
        proc = self.supernode_process(name, config_file, port, key)
        self.processes[f"node:{name}"] = proc
        proc.start()
        if not wait:
            return proc, port
        self._wait_listening(proc, port)
        return proc

    def supernode_process(self, name: str, config_file: Path, port: int,
                          key: NodeKey | None) -> ManagedProcess:
        """The ``flower-supernode`` command of one node (TLS + key when the link has TLS)."""
        if self.tls is None:
            security = ["--insecure"]
        else:
            security = ["--root-certificates", str(self.tls.ca_cert)]
            if key is not None:
                security += ["--auth-supernode-private-key", str(key.private)]
        return ManagedProcess(
            f"supernode {name}",
            [flower_executable("flower-supernode"), *security,
             "--superlink", f"{LOOPBACK}:{self.superlink_port}",
             "--host", LOOPBACK, "--port", str(port), "--node-config", str(config_file)],
            self.work_dir / "logs" / f"supernode-{name}.log", flower_env(self.home(name)))

    def register_node(self, key: NodeKey) -> None:
        """``flwr supernode register KEY.pub``: the SuperLink admits this key from now on."""
        done = self._flwr("supernode", "register", str(key.public), CONNECTION_NAME)
        if done.returncode != 0:
            raise KitError(f"flwr supernode register {key.public} failed: "
                           f"{(done.stdout + done.stderr).strip()[-400:]}")

    def stop_node(self, name: str) -> None:
        """Stop one site: its SuperNode (with its SuperExec and ClientApp processes) and its
        worker, as when the site's machine goes down."""
        proc = self.processes.pop(f"node:{name}", None)
        if proc is not None:
            proc.stop()
        self.stop_worker(name)

    # -- site workers ----------------------------------------------------------------------
    def worker_alive(self, name: str) -> bool:
        proc = self.processes.get(f"worker:{name}")
        return proc is not None and proc.alive()

    def start_worker(self, name: str, wait: bool = True) -> ManagedProcess:
        """Start ``duallora site-worker`` for ``name``; wait until its socket is there."""
        from duallora.flower.site.worker import socket_path

        config_file = self.node_config_file(name)
        socket_path(str(self.node_spec(name).node_config["state-dir"])).unlink(missing_ok=True)
        command = [sys.executable, "-m", "duallora", "site-worker", "--node-config",
                   str(config_file)]
        log_path = self.work_dir / "logs" / f"worker-{name}.log"
        env = flower_env(self.home(name))
        proc = (ForkedWorker(f"site worker {name}", command, log_path, env,
                             server=self.fork_server()) if self.fork_workers
                else ManagedProcess(f"site worker {name}", command, log_path, env))
        self.processes[f"worker:{name}"] = proc
        proc.start()
        if wait:
            self.wait_worker(name)
        return proc

    def start_fork_server(self) -> ForkServerProcess:
        """Start the parent that forks the site workers; ``fork_server`` waits for it."""
        server = ForkServerProcess(
            "site workers' fork server",
            [sys.executable, "-m", "duallora.flower.localhost.worker_forks"],
            self.work_dir / "logs" / "worker-forks.log", flower_env(self.home("worker-forks")))
        self.processes[FORK_SERVER] = server
        server.start()
        return server

    def fork_server(self) -> ForkServerProcess:
        """The running fork server, ready to fork (started again if it is not running)."""
        server = self.processes.get(FORK_SERVER)
        if server is None or not server.alive():
            if server is not None:
                server.stop(grace=0.5)
            server = self.start_fork_server()
        server.wait_ready(self.startup_timeout)
        return server

    def wait_worker(self, name: str) -> None:
        """Until the site worker ``name`` listens on its socket (raise if it died)."""
        from duallora.flower.site.worker import socket_path

        proc = self.processes[f"worker:{name}"]
        sock = socket_path(str(self.node_spec(name).node_config["state-dir"]))
        deadline = time.monotonic() + self.startup_timeout
        while not sock.exists():
            if not proc.alive():
                raise KitError(proc.describe_failure("the site worker failed to start"))
            if time.monotonic() > deadline:
                raise KitError(proc.describe_failure(
                    f"the site worker did not open {sock} within {self.startup_timeout:.0f} s"))
            time.sleep(0.1)

    def stop_worker(self, name: str) -> None:
        proc = self.processes.pop(f"worker:{name}", None)
        if proc is not None:
            proc.stop()

    def keep_workers_up(self) -> None:
        """Start again every site worker that died (a supervisor's job at a real site)."""
        for key, proc in list(self.processes.items()):
            if key.startswith("worker:") and not proc.alive():
                name = key.split(":", 1)[1]
                proc.stop(grace=0.5)
                self.restarts.append(name)
                self.start_worker(name)

    def _wait_listening(self, proc: ManagedProcess, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise KitError(proc.describe_failure("Flower failed to start"))
            if port_open(port):
                return
            time.sleep(0.2)
        raise KitError(proc.describe_failure(
            f"Flower did not start listening on {LOOPBACK}:{port} within "
            f"{self.startup_timeout:.0f} s"))

    # -- run -------------------------------------------------------------------------------
    def check_alive(self) -> None:
        """Raise with the log tail of the first of our processes that died."""
        for proc in self.processes.values():
            if not proc.alive():
                raise KitError(proc.describe_failure("a Flower process stopped during the run"))

    def submit(self, app_dir: Path, run_config: Mapping[str, ConfigValue],
               tag: str = "run") -> ManagedProcess:
        """Start ``flwr run APP local --stream`` in the background; see ``wait``. Runs
        submitted side by side need different tags (each has its own log)."""
        if f"flwr:{tag}" in self.processes:
            raise KitError(f"a run tagged {tag!r} is already running on these sites: give "
                           f"each run its own tag")
        overrides = write_flat_toml(self.work_dir / "run-config" / f"{tag}.toml", run_config)
        proc = ManagedProcess(
            f"flwr run ({tag})",
            [flower_executable("flwr"), "run", str(Path(app_dir).resolve()), CONNECTION_NAME,
             "--stream", "--run-config", str(overrides)],
            self.work_dir / "logs" / f"flwr-{tag}.log", flower_env(self.home("cli")))
        self.processes[f"flwr:{tag}"] = proc
        proc.start()
        return proc

    def wait(self, proc: ManagedProcess, timeout: float, watch_nodes: bool = True,
             finished_marker: Path | None = None) -> FlowerRunResult:
        """Wait for a submitted run; fail early (with logs) if a Flower process dies.

        ``finished_marker``: a file the app writes when it is done; when it exists, the
        SuperLink's status is asked once, not waited for (it can lag behind the end of the
        stream by seconds, and a failure after the marker would still show).
        """
        start = time.monotonic()
        deadline = start + timeout
        while proc.alive():
            if time.monotonic() > deadline:
                run_id = self._run_id(proc.log_path)
                self._stop_run(run_id)
                raise KitError(proc.describe_failure(
                    f"the Flower run did not finish within {timeout:.0f} s")
                    + "\n" + self._all_tails())
            self.keep_workers_up()
            others = [p for key, p in self.processes.items()
                      if not key.startswith(("flwr:", "worker:", FORK_SERVER))
                      and (watch_nodes or key == "superlink")]
            for other in others:
                if not other.alive():
                    raise KitError(other.describe_failure(
                        "a Flower process stopped during the run"))
            time.sleep(0.3)
        wall = time.monotonic() - start
        self.processes.pop(next(k for k, v in self.processes.items() if v is proc), None)
        proc.stop()
        run_id = self._run_id(proc.log_path)
        app_finished = finished_marker is not None and finished_marker.is_file()
        status = (self._run_status(run_id, 0.0 if app_finished else 90.0)
                  if run_id is not None else "not started")
        return FlowerRunResult(run_id, status, proc.log_path, wall, app_finished)

    def run_app(self, app_dir: Path, run_config: Mapping[str, ConfigValue],
                timeout: float = 600.0) -> FlowerRunResult:
        """Submit an app, stream its log to a file, and raise with every log tail unless it
        finished as ``completed``."""
        result = self.wait(self.submit(app_dir, run_config), timeout)
        if not result.completed:
            raise KitError(f"the Flower run ended as {result.status!r}\n"
                           + self.describe_logs(result.log_path))
        return result

    def describe_logs(self, run_log: Path) -> str:
        """The end of the run's log and of every running process's log (for error messages)."""
        return (f"last lines of {run_log}:\n{log_tail(run_log, 40)}\n" + self._all_tails())

    @staticmethod
    def _run_id(log_path: Path) -> int | None:
        found = re.search(r"Successfully started run (\d+)",
                          log_path.read_text(errors="replace") if log_path.exists() else "")
        return int(found.group(1)) if found else None

    def _flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        env = flower_env(self.home("cli"))
        env["COLUMNS"] = "100000"  # rich wraps long JSON strings at the terminal width
        return subprocess.run(  # noqa: S603 - fixed executable, no shell
            [flower_executable("flwr"), *args], capture_output=True, text=True, env=env,
            timeout=timeout, check=False)

    def _run_status(self, run_id: int, patience: float = 90.0) -> str:
        """``finished:completed`` / ``finished:failed`` / ... as the SuperLink reports it."""
        deadline = time.monotonic() + patience
        status = "unknown"
        while True:  # asked at least once, then until finished or out of patience
            try:
                done = self._flwr("ls", CONNECTION_NAME, "--run-id", str(run_id),
                                  "--format", "json")
            except subprocess.TimeoutExpired:
                done = None
            if done is not None:
                found = re.search(r'"status":\s*"([^"]+)"', done.stdout)
                status = found.group(1) if found else "unknown"
            if status.startswith("finished") or time.monotonic() >= deadline:
                return status
            time.sleep(0.5)

    def _stop_run(self, run_id: int | None) -> None:
        if run_id is not None and self.processes.get("superlink") is not None:
            self._flwr("stop", str(run_id), CONNECTION_NAME, timeout=30)

    def _all_tails(self) -> str:
        return "\n".join(f"last lines of {proc.log_path}:\n{log_tail(proc.log_path, 15)}"
                         for proc in self.processes.values())

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process we started (the run, the SuperNodes and the SuperLink)."""
        processes = list(self.processes.values())
        self.processes.clear()
        stop_all(processes)

    def process_groups(self) -> list[int]:
        """The process-group ids still held (empty after ``stop``)."""
        return [proc.pid for proc in self.processes.values() if proc.pid is not None]


# Deprecated alias (the old name, from before the localhost launcher had its own package): kept
# for one release so outside code keeps working; use LocalhostFederation.
LocalFederation = LocalhostFederation
