"""The Flower ServerApp: the kit's round driver with every site's work done on a SuperNode.

Runs in: the ServerApp process (started by the SuperLink's SuperExec for each run).

There is no round loop here. ``main`` reads the run config, waits for the sites, and hands the
federated core's driver (``duallora.federated.loop.run_federation``) a ``FlowerSites``
(``duallora.flower.server.sites``): the same rounds, selection, metrics and run directory as
``duallora train``, with each batch of site work sent as one message per site. For the same
seed the run directory holds the same numbers as the in-process run.

A vendor named by ``holdout-vendor`` is a site that only receives evaluation requests (the
global model's test on an unseen vendor), as in-process.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.flower.run_config import flower_settings, train_config_from_run_config
from duallora.flower.server.messaging import SiteDirectory
from duallora.flower.server.sites import FlowerSites, ask_moments_with_hello
from duallora.flower.settings import FINISHED, FlowerSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = flower_settings(dict(context.run_config))
    config = train_config_from_run_config(dict(context.run_config))
    run_flower_training(grid, config, settings)


@dataclass
class GaussianNoiseOnAggregate:
    """Central DP for the global update: the strategy's weighted mean plus Gaussian noise.

    The sites clip their update with Flower's ``fixedclipping_mod`` (L2 norm ``clipping_norm``
    of upload minus received); then one site moves the weighted mean by at most
    ``max_k(w_k) * clipping_norm``, and the noise standard deviation is ``noise_multiplier``
    times that (Flower's ``compute_stdv`` for equal weights). Noise is drawn from
    ``(seed, round)`` so a run is reproducible. Everything else is the wrapped strategy's.
    """

    strategy: Any
    noise_multiplier: float
    clipping_norm: float
    seed: int
    round_idx: int = 0
    delta: float = 1e-5
    sites: int = 1

    def round_metrics(self, releases: int) -> dict[str, float]:
        """The budget after ``releases`` noisy aggregates (``privacy.epsilon``: Flower's RDP
        accountant): this round's own epsilon and the total so far, for ``delta``."""
        from duallora.flower.server.privacy import epsilon

        return {"epsilon_round": epsilon(self.noise_multiplier, 1, self.delta, self.sites),
                "epsilon": epsilon(self.noise_multiplier, releases, self.delta, self.sites),
                "delta": self.delta}

    def __call__(self, round_idx: int, uploads: list[tuple[dict, int]]
                 ) -> dict[str, torch.Tensor]:
        """The driver's aggregator: this round's noisy mean."""
        self.round_idx = round_idx
        return self.aggregate(uploads)

    def aggregate(self, uploads: list[tuple[dict, int]]) -> dict[str, torch.Tensor]:
        from flwr.supercore.differential_privacy import compute_stdv

        mean = self.strategy.aggregate(uploads)
        total = float(sum(n for _, n in uploads))
        heaviest = max(n for _, n in uploads) / total
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, 1) * heaviest
        rng = np.random.default_rng([self.seed, self.round_idx, 7])
        return {name: tensor + torch.from_numpy(
                    rng.normal(0.0, std, tuple(tensor.shape))).to(tensor.dtype)
                for name, tensor in mean.items()}


def recorded_run_key(run_dir: Path) -> str | None:
    """The run key a Flower run directory records (``flower/flower.json``); None if none."""
    info_path = Path(run_dir) / "flower" / "flower.json"
    return str(json.loads(info_path.read_text())["run-key"]) if info_path.is_file() else None


def run_key_for(rundir: Any, resume: bool) -> str:
    """A name for this run in every site's state folder; kept in the run dir for --resume."""
    recorded = recorded_run_key(rundir.root) if resume else None
    return recorded or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def split_sites(directory: SiteDirectory, holdout: str | None
                ) -> tuple[list[str], list[str]]:
    """(trainers, vendors) among the connected sites, as ``prepare_cohort`` splits a cohort:
    every site but the hold-out is a vendor; vendors with training subjects train."""
    vendors = sorted(name for name in directory.by_name if name != holdout)
    trainers = [name for name in vendors if int(directory.info[name].get("n-train", 0)) > 0]
    if not trainers:
        raise KitError(f"no connected site has training subjects (sites: {vendors})")
    return trainers, vendors


def run_flower_training(grid: Grid, config: TrainConfig, settings: FlowerSettings) -> Path:
    """Wait for the sites, then run the core's driver with ``FlowerSites``."""
    from duallora.base.rundir import RunDir
    from duallora.federated.client_model import build_client_model
    from duallora.federated.loop import run_federation
    from duallora.federated.strategies import get_strategy

    if not settings.out_dir:
        raise KitError("run config out-dir is empty: say where the server writes the run")
    rundir = RunDir(Path(settings.out_dir))
    resume = settings.resume
    if resume and rundir.config.is_file():
        config = rundir.read_config()
    strategy = get_strategy(config.strategy, config.head)
    if not strategy.federated:
        raise KitError(f"strategy {strategy.name} has no server; run it with duallora train")
    rundir.prepare(resume=resume, overwrite=settings.overwrite)
    if config.cross_site:
        raise KitError("cross-site is in-process only: over Flower it would move each "
                       "site's private adapter to the other sites")
    model = build_client_model(config, strategy)
    # the new run is built: only now may --overwrite remove the old one
    rundir.begin(clear=settings.overwrite and not resume)
    flower_dir = rundir.root / "flower"
    flower_dir.mkdir(parents=True, exist_ok=True)
    run_key = run_key_for(rundir, resume)
    if not resume:  # a fresh run (or --overwrite) starts these logs empty
        for stale in ("wire.jsonl", "server.log", FINISHED):
            (flower_dir / stale).unlink(missing_ok=True)
    log_path = flower_dir / "server.log"

    def log(line: str) -> None:
        with log_path.open("a") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    directory = SiteDirectory(grid, run_key, log=log)
    holdout = config.holdout_vendor or None
    ask_moments_with_hello(directory, config, holdout)
    wait = settings.node_wait_timeout
    if holdout:  # the evaluation-only site must be there for the final test
        directory.wait_for([holdout], 0, wait)
    directory.wait_for(None, settings.num_clients or config.min_clients, wait)
    trainers, vendors = split_sites(directory, holdout)
    rundir.write_json(flower_dir / "flower.json",
                      {"run-key": run_key, "sites": sorted(directory.by_name),
                       "trainers": trainers, "holdout": holdout,
                       "settings": dataclasses.asdict(settings)})
    rundir.write_config(TrainConfig.from_dict({**json.loads(config.to_json()), "data": ""}))
    dp = settings.central_dp
    sites = FlowerSites(grid, directory, config, model, trainers, vendors, holdout,
                        flower_dir / "wire.jsonl", settings.round_timeout,
                        clipping_norm=settings.dp_clipping_norm if dp else None,
                        site_wait=settings.site_wait)
    aggregate = (GaussianNoiseOnAggregate(strategy, settings.dp_noise_multiplier,
                                          settings.dp_clipping_norm, config.seed,
                                          delta=settings.dp_delta, sites=len(trainers))
                 if dp else None)
    run_federation(config, strategy, model, sites, rundir, resume=resume, progress=False,
                   aggregate=aggregate,
                   after_round=lambda r: log(f"round {r} done"))
    rundir.write_json(flower_dir / FINISHED, {"run-key": run_key, "rounds": config.rounds})
    log("run finished")
    return rundir.root
