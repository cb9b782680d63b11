"""Orthogonal dual LoRA and FedALT over Flower, against the in-process loop.

A real SuperLink and two SuperNodes (``duallora flower-local``'s machinery) on the session
cohort's first two vendors; both runs are submitted at once to the same sites
(``localhost_sites``), and the in-process references train meanwhile at one intra-op thread, as
every site worker runs. Each Flower run must equal its in-process run byte for byte
(predictions.csv, metrics.csv, comm.jsonl): FedALT's per-site rest-of-world payload is made by
the same driver code on both transports, and the penalty runs on the site inside
``train_client``. Nothing the strategy keeps private ever reaches the server. Slow (about two
minutes on two cores).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from duallora.base.command_line import build_parser
from duallora.commands import COMMAND_MODULES, flower_local, train
from duallora.federated.client_model import build_client_model
from duallora.federated.loop import run_training
from duallora.flower.localhost.run import localhost_sites
from duallora.flower.run_config import SITE_FIELDS

pytestmark = pytest.mark.slow
OPTIONS = ["--quick", "--fm", "none", "--bootstrap", "20"]
SITES = ("Siemens", "Philips")  # the first two vendors: the ones `flower-local --clients 2` runs
STRATEGIES = ("orthogonal_duallora", "fedalt")


def parsed(argv: list[str]) -> object:
    return build_parser("duallora", "", COMMAND_MODULES).parse_args(argv)


@pytest.fixture(scope="module")
def two_sites(harmonized_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session cohort's subjects of ``SITES`` only (volumes linked, not copied)."""
    dest = tmp_path_factory.mktemp("two_sites")
    metadata = pd.read_csv(harmonized_dir / "metadata.csv", dtype=str, keep_default_na=False)
    metadata[metadata["vendor"].isin(SITES)].to_csv(dest / "metadata.csv", index=False)
    (dest / "volumes").symlink_to(harmonized_dir / "volumes")
    return dest


@pytest.fixture(scope="module")
def runs(two_sites: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each strategy over Flower (`flower-local`'s configuration) and in process (`train`'s,
    from the same options)."""
    base = tmp_path_factory.mktemp("flower_personalization")
    found = {}
    for strategy in STRATEGIES:
        options = [*OPTIONS, "--strategy", strategy]
        config = flower_local.config_from_args(
            parsed(["flower-local", "--clients", str(len(SITES)), "--data", str(two_sites),
                    "--out", "unused", *options]), skip=SITE_FIELDS)
        cache = base / strategy / "cache"
        train_config = train.config_from_args(parsed(
            ["train", "--data", str(two_sites), "--out", "unused", "--cache-dir", str(cache),
             *options]))
        assert train_config == dataclasses.replace(config, cache_dir=str(cache))
        found[strategy] = {"config": config, "train_config": train_config}
    with localhost_sites(two_sites, len(SITES), work_dir=base / "sites") as sites:
        submitted = {strategy: sites.submit(found[strategy]["config"],
                                            base / strategy / "flower", tag=strategy)
                     for strategy in STRATEGIES}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as each site worker (OMP_NUM_THREADS=1): same summation order
        try:
            for strategy in STRATEGIES:
                found[strategy]["reference"] = run_training(
                    found[strategy]["train_config"], base / strategy / "inproc", progress=False)
        finally:
            torch.set_num_threads(threads)
        for strategy, run in submitted.items():
            found[strategy]["local"] = run.wait(timeout=1200)
    return found


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_flower_equals_in_process_byte_for_byte(strategy, runs) -> None:
    reference, local = runs[strategy]["reference"], runs[strategy]["local"]
    assert local.result.completed and sorted(local.sites) == sorted(SITES)
    for name in ("predictions.csv", "metrics.csv", "comm.jsonl"):
        assert (local.run_dir / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_nothing_private_reaches_the_server(strategy, runs) -> None:
    config, run_dir = runs[strategy]["config"], runs[strategy]["local"].run_dir
    model = build_client_model(config)
    private = set(model.private_names)
    replies = [json.loads(line) for line in
               (run_dir / "flower" / "wire.jsonl").read_text().splitlines()]
    arrived = {n.split("/", 1)[-1] for r in replies for n in r["names"]}
    assert replies and not arrived & private
    assert not [n for n in arrived if "fedalt_router" in n]
    server = [set(load_file(str(p))) for p in run_dir.rglob("*.safetensors")]
    assert server and all(not keys & private for keys in server)
    uploads = [json.loads(line) for line in (run_dir / "comm.jsonl").read_text().splitlines()]
    uploaded = {key for m in uploads if m["direction"] == "up" and m["round"] > 0
                for key in m["keys"]}
    if strategy == "fedalt":  # the individual adapter travels up, by the method's design
        assert uploaded == set(model.shared_names)
        assert all(".local." in key for key in uploaded)
        assert arrived >= uploaded
    else:
        assert uploaded == set(model.shared_names)
        assert not [key for key in arrived if ".local." in key]
