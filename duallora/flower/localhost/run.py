"""Run the kit's Flower app on this machine: N sites as N real SuperNodes on 127.0.0.1.

Runs in: the launcher's process.

This is what ``python -m duallora flower-local`` and notebook 05 call (``run_on_localhost``).
Each site gets its own folder under ``work_dir/sites/<vendor>`` (node-local state: private
adapters, prefix cache, event log; ``site_files`` lists it) and reads the harmonized cohort
through its node config, as a hospital would read its own copy. The server writes the run
directory, in the same format as ``duallora train``.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from data_prep.conventions import VENDORS
from duallora.base.config import TrainConfig
from duallora.errors import KitError, Terminated
from duallora.flower.localhost.launcher import FlowerRunResult, LocalhostFederation, NodeSpec
from duallora.flower.localhost.processes import ManagedProcess
from duallora.flower.localhost.tls import make_tls_material
from duallora.flower.run_config import APP_DIR, settings_run_config, to_run_config
from duallora.flower.settings import FINISHED, FlowerSettings


@dataclass
class LocalhostRun:
    """Where a localhost Flower run put things."""

    run_dir: Path
    work_dir: Path
    sites: list[str]
    result: FlowerRunResult


def cohort_vendors(data_dir: Path) -> list[str]:
    """Vendors of a harmonized cohort, in the kit's usual order."""
    from duallora.data import read_metadata

    present = set(read_metadata(data_dir)["vendor"].astype(str))
    return [v for v in VENDORS if v in present] + sorted(present - set(VENDORS))


def cohort_view(data_dir: Path, vendors: list[str], dest: Path) -> Path:
    """A harmonized folder holding only ``vendors``' subjects.

    ``metadata.csv`` is filtered (row order kept, so each vendor's subjects come in the order
    the in-process loop gives that client); every other entry is a symbolic link to the
    original, so no volume is copied.
    """
    from duallora.data import read_metadata

    source = Path(data_dir).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    frame = read_metadata(source)
    raw = pd.read_csv(source / "metadata.csv", dtype=str, keep_default_na=False)
    raw[frame["vendor"].astype(str).isin(vendors).to_numpy()].to_csv(dest / "metadata.csv",
                                                                     index=False)
    for entry in source.iterdir():
        if entry.name != "metadata.csv":
            (dest / entry.name).symlink_to(entry)
    return dest


def site_data_view(data_dir: Path, vendor: str, dest: Path) -> Path:
    """A harmonized folder holding only ``vendor``'s subjects, as a hospital's own copy would
    (``cohort_view`` of one vendor)."""
    return cohort_view(data_dir, [vendor], dest)


def first_vendors(data_dir: Path, n_clients: int) -> list[str]:
    """The vendors ``flower-local --clients n_clients`` makes sites of: the cohort's first
    ``n_clients`` in the kit's usual order."""
    vendors = cohort_vendors(data_dir)
    if n_clients < 1 or n_clients > len(vendors):
        raise KitError(f"--clients {n_clients}: {data_dir} holds {len(vendors)} vendors "
                       f"({', '.join(vendors)})")
    return vendors[:n_clients]


def site_nodes(data_dir: Path, work_dir: Path, n_clients: int,
               cache_dir: Path | None = None) -> list[NodeSpec]:
    """One SuperNode per vendor (the first ``n_clients`` vendors of the cohort), each reading
    its own data view and keeping its state in ``work_dir/sites/<vendor>``; ``cache_dir``: one
    prefix-cache folder for every site (node config ``cache-dir``) instead of one each."""
    nodes = []
    for vendor in first_vendors(data_dir, n_clients):
        site_dir = work_dir / "sites" / vendor
        view = site_data_view(data_dir, vendor, site_dir / "data")
        node_config = {"client-name": vendor, "data-dir": str(view),
                       "state-dir": str(site_dir / "state")}
        if cache_dir is not None:
            node_config["cache-dir"] = str(Path(cache_dir).resolve())
        nodes.append(NodeSpec(vendor, node_config))
    return nodes


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` (a KeyboardInterrupt) while the federation runs, so a
    launcher stopped by SIGTERM (``kill``, ``timeout``, a job scheduler or supervisor) tears
    down every process it started, as on Ctrl-C, and the command line exits 143, not 130.
    Once caught, SIGTERM is ignored until teardown is over: a second one must not cut the
    teardown short and leave processes running."""
    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signal handling alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def refuse_cross_site(config: TrainConfig) -> None:
    if config.cross_site:
        raise KitError("--cross-site is in-process only: over Flower it would move each "
                       "site's private adapter to the other sites")


def run_config_for(config: TrainConfig, settings: FlowerSettings) -> dict[str, Any]:
    """The run-config overrides ``flwr run`` gets: concrete training values (``--quick``
    already resolved) and the deployment settings."""
    return {**to_run_config(config), **settings_run_config(settings)}


@dataclass
class LocalhostSites:
    """Started local sites (a SuperLink, and per vendor a SuperNode and a site worker) that
    take Flower runs one after another or several at once (``submit``), as a real federation
    does: the SuperLink serves many runs and each site's worker stays up between them, imports
    and data loaded (``localhost_sites``). Every run reads ``data_dir``, the cohort the sites
    were made from.
    """

    federation: LocalhostFederation
    data_dir: Path
    work_dir: Path
    sites: list[str]

    def run(self, config: TrainConfig, out_dir: Path, *, resume: bool = False,
            overwrite: bool = False, settings: FlowerSettings | None = None,
            timeout: float = 3600.0,
            during_run: Callable[[LocalhostFederation, Path], None] | None = None,
            tag: str = "run") -> LocalhostRun:
        """Submit one run of ``config`` into ``out_dir`` and wait for it (see
        ``run_on_localhost``); ``tag`` names its ``flwr run`` log (``logs/flwr-TAG.log``)."""
        submitted = self.submit(config, out_dir, resume=resume, overwrite=overwrite,
                                settings=settings, tag=tag)
        if during_run is not None:
            during_run(self.federation, submitted.out_dir)
        return submitted.wait(timeout, watch_nodes=during_run is None)

    def submit(self, config: TrainConfig, out_dir: Path, *, resume: bool = False,
               overwrite: bool = False, settings: FlowerSettings | None = None,
               tag: str = "run") -> SubmittedRun:
        """Start one run and return at once: several submitted runs train side by side on
        the same sites (the SuperLink keeps them apart by run, each site worker answers one
        message at a time and keys its state by run, so each run's numbers are those it
        would get alone). ``SubmittedRun.wait`` waits for it."""
        if Path(config.data).resolve() != self.data_dir:
            raise KitError(f"the run reads {config.data}, but these sites were set up on "
                           f"{self.data_dir}: start sites on that cohort")
        refuse_cross_site(config)
        out_dir = Path(out_dir).resolve()
        settings = dataclasses.replace(settings or FlowerSettings(), out_dir=str(out_dir),
                                       num_clients=len(self.sites), resume=resume,
                                       overwrite=overwrite)
        (out_dir / "flower" / FINISHED).unlink(missing_ok=True)
        process = self.federation.submit(APP_DIR, run_config_for(config, settings), tag=tag)
        return SubmittedRun(self, out_dir, process)


@dataclass
class SubmittedRun:
    """A run submitted to ``LocalhostSites`` (``submit``) and not yet waited for."""

    sites: LocalhostSites
    out_dir: Path
    process: ManagedProcess

    def wait(self, timeout: float = 3600.0, watch_nodes: bool = True) -> LocalhostRun:
        """Wait for the run; raise with the logs unless it finished its run directory.
        ``watch_nodes=False``: a SuperNode that stops meanwhile is not an error (tests stop
        and restart one on purpose)."""
        federation = self.sites.federation
        finished = self.out_dir / "flower" / FINISHED
        result = federation.wait(self.process, timeout, watch_nodes=watch_nodes,
                                 finished_marker=finished)
        # The ServerApp's marker is the ground truth; the SuperLink's status confirms it.
        if not finished.is_file() or result.status in ("finished:failed", "finished:stopped"):
            raise KitError(f"the Flower run ended as {result.status!r} without finishing "
                           f"the run directory {self.out_dir}\n"
                           + federation.describe_logs(result.log_path))
        return LocalhostRun(self.out_dir, self.sites.work_dir, list(self.sites.sites), result)


@contextmanager
def localhost_sites(data_dir: Path, n_clients: int, *, work_dir: Path | None = None,
                    tls: bool = False, cache_dir: Path | None = None,
                    keep_work: bool = True) -> Iterator[LocalhostSites]:
    """Start a SuperLink and ``n_clients`` sites on the cohort ``data_dir``; stop every
    process on leaving (also on errors, Ctrl-C and SIGTERM). ``work_dir``, ``tls`` and
    ``cache_dir`` as in ``run_on_localhost``."""
    data_dir = Path(data_dir)
    if not (data_dir / "metadata.csv").is_file():
        raise KitError(f"--data {data_dir}: not a harmonized cohort (no metadata.csv)")
    own_work = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="duallora-flower-")).resolve()
    nodes = site_nodes(data_dir, work, n_clients, cache_dir)
    try:
        material = (make_tls_material(work / "flower" / "tls", [node.name for node in nodes])
                    if tls else None)
        with terminate_as_interrupt(), LocalhostFederation(work / "flower", nodes,
                                                           tls=material) as federation:
            yield LocalhostSites(federation, data_dir.resolve(), work,
                                 [node.name for node in nodes])
    finally:
        if own_work and not keep_work:
            shutil.rmtree(work, ignore_errors=True)


def run_on_localhost(config: TrainConfig, out_dir: Path, n_clients: int, *,
                     work_dir: Path | None = None, resume: bool = False,
                     overwrite: bool = False, dp_noise_multiplier: float = 0.0,
                     dp_clipping_norm: float = 1.0, settings: FlowerSettings | None = None,
                     timeout: float = 3600.0, keep_work: bool = True,
                     during_run: Callable[[LocalhostFederation, Path], None] | None = None,
                     tls: bool = False, cache_dir: Path | None = None) -> LocalhostRun:
    """Start a SuperLink and ``n_clients`` SuperNodes, run the app, tear everything down.

    ``config.data`` is the harmonized folder every local site reads. ``during_run(federation,
    run_dir)`` is called once the run is submitted (tests stop and restart a node there).
    ``settings`` (timeouts, DP) replaces the ``dp_*`` arguments when given. ``tls``: make a
    CA, a SuperLink certificate and a key pair per site under ``work_dir/flower/tls`` and run
    with TLS and SuperNode authentication (every site's key registered), as real sites do.
    ``cache_dir``: one prefix-cache folder shared by the local sites (e.g. the in-process runs'
    own, so a Flower run reuses their frozen-prefix features); by default each site keeps its
    own under its state folder, as a hospital does. Several runs on the same sites:
    ``localhost_sites``.
    """
    refuse_cross_site(config)
    settings = settings or FlowerSettings(dp_noise_multiplier=float(dp_noise_multiplier),
                                          dp_clipping_norm=float(dp_clipping_norm))
    with localhost_sites(Path(config.data), n_clients, work_dir=work_dir, tls=tls,
                         cache_dir=cache_dir, keep_work=keep_work) as sites:
        return sites.run(config, out_dir, resume=resume, overwrite=overwrite,
                         settings=settings, timeout=timeout, during_run=during_run)


def site_files(work_dir: Path, run_key: str | None = None) -> pd.DataFrame:
    """What each site kept on its own disk (node-local state), by file kind; ``run_key``
    (``RUN_DIR/flower/flower.json``): only that run's folder, for sites that served several."""
    rows = []
    for site in sorted(p for p in (Path(work_dir) / "sites").iterdir() if p.is_dir()):
        state = site / "state"
        for path in sorted((state / "runs" / run_key if run_key else state).rglob("*")):
            if path.is_file():
                rows.append({"site": site.name, "file": str(path.relative_to(state)),
                             "bytes": path.stat().st_size})
    return pd.DataFrame(rows, columns=["site", "file", "bytes"])


# Deprecated aliases (the old names, when "local" meant "on this machine" and was easily read as
# "one site alone"): kept for one release so outside code keeps working.
run_local = run_on_localhost
LocalRun = LocalhostRun
