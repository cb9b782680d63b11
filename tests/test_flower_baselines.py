"""The two baselines with site-side logic, over Flower: FedDPA (two-phase training on the site,
instance-wise weighting inside the site's evaluation) and FedAvg-LoRA-FT (the fine-tuning runs
on the site inside its final evaluation; the fine-tuned model stays there).

A real SuperLink and two SuperNodes (``duallora flower-local``'s machinery) on the session
cohort's first two vendors, compared with the in-process loop of the same configuration on the
same two vendors (two sites exercise everything site-side; each extra site only adds processes).
Both Flower runs go to one set of sites at the same time, as a SuperLink serves many runs
(``localhost_sites``, ``LocalhostSites.submit``); slow (about two minutes on two cores).
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
from duallora.flower.server.server_app import FINISHED, recorded_run_key

pytestmark = pytest.mark.slow
OPTIONS = ["--quick", "--fm", "none", "--bootstrap", "20"]
SITES = ("Siemens", "Philips")  # the first two vendors: the ones `flower-local --clients 2` runs


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


STRATEGIES = ("feddpa", "fedavg_lora_ft")


@pytest.fixture(scope="module")
def runs(two_sites: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each strategy over Flower and in process. Both Flower runs are submitted at once to one
    set of sites (``localhost_sites``: one SuperLink, each site's worker serving both runs),
    and the in-process references train while they run."""
    base = tmp_path_factory.mktemp("flower_baselines")
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


def test_both_runs_trained_side_by_side(runs) -> None:
    """Each run had found its sites (``flower.json``) before the other one finished
    (``finished.json``): the sites served both at once, and each still equals its in-process
    run (below)."""
    flower = [runs[s]["local"].run_dir / "flower" for s in STRATEGIES]
    started = max((folder / "flower.json").stat().st_mtime for folder in flower)
    first_done = min((folder / FINISHED).stat().st_mtime for folder in flower)
    assert started < first_done


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_last_validation_goes_with_the_final_test(strategy, runs) -> None:
    """One message per site per round, the last one included: under site-val-ba (the
    default) each site validates round 2 and makes its final test in one message, decides
    its own selection, and tests (and exports, fine-tunes) only the model it selected."""
    run_dir, work = runs[strategy]["local"].run_dir, runs[strategy]["local"].work_dir
    replies = [json.loads(line) for line in
               (run_dir / "flower" / "wire.jsonl").read_text().splitlines()]
    key = recorded_run_key(run_dir)
    for site in SITES:
        mine = [(r["group"], r["type"]) for r in replies if r["site"] == site]
        assert [m for m in mine if m[0] in ("2", "final")] == [("2", "train"),
                                                               ("final", "evaluate")], site
        events = [json.loads(line) for line in (work / "sites" / site / "state" / "runs" / key
                                                / "events.jsonl").read_text().splitlines()]
        assert len([e for e in events if e["kind"] == "selection"]) == 1, site


def test_both_runs_were_served_by_the_same_sites(runs) -> None:
    keys = {recorded_run_key(runs[s]["local"].run_dir) for s in STRATEGIES}
    assert len(keys) == len(STRATEGIES)
    (work,) = {runs[s]["local"].work_dir for s in STRATEGIES}
    for site in SITES:  # each run's state folder, on the site's own disk
        held = {p.name for p in (work / "sites" / site / "state" / "runs").iterdir()}
        assert held == keys, site


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_flower_equals_in_process_and_keeps_private_parts_on_site(strategy, runs) -> None:
    config, reference, local = (runs[strategy][k] for k in ("config", "reference", "local"))
    run_dir = local.run_dir
    assert local.result.completed and sorted(local.sites) == sorted(SITES)
    # the same run: messages byte for byte, predictions and metrics to float tolerance
    assert (run_dir / "comm.jsonl").read_text() == (reference / "comm.jsonl").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "predictions.csv"),
                                  pd.read_csv(reference / "predictions.csv"),
                                  rtol=1e-5, atol=1e-5)
    ours, theirs = pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    pd.testing.assert_frame_equal(ours.drop(columns="value"), theirs.drop(columns="value"))
    pd.testing.assert_series_equal(ours["value"], theirs["value"], rtol=1e-5, atol=1e-6)
    # nothing private reached the server: no private name in any reply, no private tensor in
    # the run directory
    private = set(build_client_model(config).private_names)
    replies = [json.loads(line) for line in
               (run_dir / "flower" / "wire.jsonl").read_text().splitlines()]
    assert replies and not [n for r in replies for n in r["names"]
                            if n.split("/", 1)[-1] in private]
    assert not [n for r in replies for n in r["names"] if ".local." in n]
    assert not list(run_dir.rglob("finetuned"))
    server = [set(load_file(str(p))) for p in run_dir.rglob("*.safetensors")]
    assert all(not keys & private for keys in server)
    if strategy == "fedavg_lora_ft":  # each site kept its own fine-tuned model
        key = recorded_run_key(run_dir)
        for site in SITES:
            found = list((local.work_dir / "sites" / site / "state" / "runs" / key)
                         .glob(f"final/finetuned/{site}.safetensors"))
            assert len(found) == 1, site
            expected = load_file(str(reference / "checkpoints" / "final" / "finetuned"
                                     / f"{site}.safetensors"))
            tuned = load_file(str(found[0]))
            assert sorted(tuned) == sorted(expected)
