"""The notebooks' Flower runs on this machine, built once per setting (notebook 05).

``ensure_flower_runs`` runs ``flower-local`` into each run folder unless a finished run with
the same settings is there (the Flower counterpart of ``experiments.ensure_run``);
``flower_cohort`` is the cohort the first ``n`` vendors' sites train on (for the in-process
reference run), ``flower_site_files`` what each site kept on its own disk.
``duallora.notebooks.experiments`` re-exports all of it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from duallora.base.config import TrainConfig
from duallora.base.markers import is_built, write_marker
from duallora.base.rundir import RunDir
from duallora.errors import KitError
from duallora.notebooks.workspace import Workspace

FLOWER_RUN_MARKER = "flower_run.json"


def flower_cohort(ws: Workspace, n_clients: int) -> Path:
    """The cohort that ``n_clients`` local Flower sites train on, for the in-process reference
    of the same run: ``ws.harmonized`` when every vendor is a site, else a view of the first
    ``n_clients`` vendors (``ws.root/harmonized_<vendors>``: filtered metadata, linked
    volumes), the ones ``flower-local --clients n_clients`` starts."""
    from duallora.flower.localhost.run import cohort_vendors, cohort_view, first_vendors

    vendors = first_vendors(ws.harmonized, n_clients)
    if len(vendors) == len(cohort_vendors(ws.harmonized)):
        return ws.harmonized
    return cohort_view(ws.harmonized, vendors, ws.root / f"harmonized_{'_'.join(vendors)}")


@dataclass(frozen=True)
class FlowerJob:
    """One localhost Flower run for ``ensure_flower_runs``: its training configuration and
    its central-DP settings (noise multiplier 0: no DP)."""

    config: TrainConfig
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0


def flower_sites_dir(run_dir: Path) -> Path:
    """The local sites' folder (their data views and node-local state) of the Flower runs
    beside ``run_dir``: every run of one ``ensure_flower_runs`` call shares it."""
    return Path(run_dir).parent / "flower_sites"


def ensure_flower_runs(jobs: dict[Path, FlowerJob], n_clients: int, *,
                       timeout: float = 3600.0) -> dict[Path, Path]:
    """``flower-local`` into each run folder of ``jobs`` unless a finished run with the same
    settings is there (the Flower counterpart of ``ensure_run``: it reruns only what changed).

    The runs still to do go side by side to **one** set of local sites (a SuperLink, and per
    vendor a SuperNode and a site worker), started once: a SuperLink serves many runs at once,
    each site worker answers their messages one at a time, and the runs' waits for Flower's
    message round trips overlap. Each run's numbers are those it gets alone. All jobs must
    read the same cohort.
    """
    from duallora.flower.localhost.run import localhost_sites
    from duallora.flower.settings import FlowerSettings

    def wanted(job: FlowerJob) -> dict[str, Any]:
        return {"config": json.loads(job.config.to_json()), "clients": n_clients,
                "dp_noise_multiplier": job.dp_noise_multiplier,
                "dp_clipping_norm": job.dp_clipping_norm}

    runs = {Path(run_dir): job for run_dir, job in jobs.items()}
    todo = {run_dir: job for run_dir, job in runs.items()
            if not is_built(run_dir / FLOWER_RUN_MARKER, wanted(job),
                            RunDir(run_dir).predictions)}
    if todo:
        cohorts = {job.config.data for job in todo.values()}
        if len(cohorts) != 1:
            raise KitError(f"Flower runs of one call must read one cohort, got "
                           f"{sorted(cohorts)}")
        first = next(iter(todo.values())).config
        # the sites share the workspace's prefix cache: one machine, and the in-process runs
        # of notebook 04 already hold every site's frozen-prefix features
        with localhost_sites(Path(first.data), n_clients,
                             work_dir=flower_sites_dir(next(iter(todo))),
                             cache_dir=Path(first.cache_dir) if first.cache_dir else None
                             ) as sites:
            submitted = {}
            for run_dir, job in todo.items():
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                settings = FlowerSettings(dp_noise_multiplier=float(job.dp_noise_multiplier),
                                          dp_clipping_norm=float(job.dp_clipping_norm))
                submitted[run_dir] = sites.submit(job.config, run_dir, settings=settings,
                                                  tag=run_dir.name)
            for run_dir, run in submitted.items():
                run.wait(timeout)
                write_marker(run_dir / FLOWER_RUN_MARKER, wanted(todo[run_dir]))
    return {run_dir: run_dir for run_dir in runs}


def ensure_flower_run(run_dir: Path, config: TrainConfig, n_clients: int, *,
                      dp_noise_multiplier: float = 0.0, dp_clipping_norm: float = 1.0,
                      timeout: float = 3600.0) -> Path:
    """``ensure_flower_runs`` of one run."""
    job = FlowerJob(config, dp_noise_multiplier, dp_clipping_norm)
    return ensure_flower_runs({Path(run_dir): job}, n_clients, timeout=timeout)[Path(run_dir)]


def flower_site_files(run_dir: Path) -> pd.DataFrame:
    """What each local site kept on its own disk for the Flower run in ``run_dir``."""
    from duallora.flower.localhost.run import site_files
    from duallora.flower.server.server_app import recorded_run_key

    run_key = recorded_run_key(run_dir)
    if run_key is None:
        raise KitError(f"{run_dir} holds no Flower run (no flower/flower.json)")
    return site_files(flower_sites_dir(run_dir), run_key)
