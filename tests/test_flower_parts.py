"""Fast checks of the Flower pieces: run config, wire format, node state, launcher, DP noise."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.config import parse_config_args, validate_config

from duallora.base.config import TrainConfig, quick_overrides, resolve
from duallora.errors import KitError, Terminated
from duallora.federated.strategies import get_strategy
from duallora.flower.flat_toml import write_flat_toml
from duallora.flower.localhost import launcher, processes
from duallora.flower.localhost.run import terminate_as_interrupt
from duallora.flower.run_config import (
    APP_DIR,
    render_app_pyproject,
    run_config_defaults,
    to_run_config,
    train_config_from_run_config,
)
from duallora.flower.server.server_app import GaussianNoiseOnAggregate
from duallora.flower.server.sites import private_ref, ref_round
from duallora.flower.settings import FlowerSettings
from duallora.flower.site.node_state import (
    MissingPrivateStateError,
    NodeStateStore,
    private_for_round,
    remember,
)
from duallora.flower.wire import (
    content_names,
    forbidden_names,
    payload_to_record,
    record_to_payload,
)


# -- run config and the app folder ----------------------------------------------------------
def test_app_pyproject_is_rendered_from_train_config():
    committed = (APP_DIR / "pyproject.toml").read_text()
    assert committed == render_app_pyproject(), \
        "duallora/flower/app/pyproject.toml is stale: run python -m duallora.flower.run_config"
    parsed = tomllib.loads(committed)
    assert parsed["tool"]["flwr"]["app"]["config"] == run_config_defaults()
    valid, errors, _ = validate_config(parsed, check_module=True, project_dir=APP_DIR)
    assert valid, errors


def test_run_config_round_trips_every_training_setting():
    config = TrainConfig(strategy="fedsa_lora", rounds=3, seed=7, targets=["attn.q", "mlp.fc1"],
                         fail_clients=["GE@2"], lr=0.01, quick=False,
                         model_overrides={"depth": 2})
    back = train_config_from_run_config(to_run_config(config))
    expected = dataclasses.replace(config, data="", cache_dir="")
    assert back == expected


def test_quick_is_resolved_once_so_explicit_values_survive_the_run_config():
    """`flower-local --quick --rounds 8` used to train 2 rounds: the ServerApp re-applied
    --quick to every value equal to a default. The run config now carries concrete values."""
    resolved = resolve({"rounds": 8, "strategy": "fedavg_lora"}, quick=True)
    assert resolved.rounds == 8 and resolved.local_epochs == quick_overrides()["local_epochs"]
    back = train_config_from_run_config(to_run_config(resolved))
    assert back == dataclasses.replace(resolved, data="", cache_dir="")
    record_only = train_config_from_run_config({**run_config_defaults(), "quick": True})
    assert record_only.rounds == TrainConfig().rounds  # a record, not an instruction


def test_bad_run_config_values_are_one_clear_error():
    with pytest.raises(KitError, match="rounds must be an integer"):
        train_config_from_run_config({"rounds": "many"})
    with pytest.raises(KitError, match="unknown strategy"):
        train_config_from_run_config({"strategy": "fedfoo"})


# -- wire -------------------------------------------------------------------------------------
def test_payload_travels_exactly_and_names_are_audited():
    payload = {"b.weight": torch.randn(3, 4), "a.bias": torch.randn(5).double()}
    record = payload_to_record(payload)
    assert len(record) == 2  # one Array per dtype, whatever the number of tensors
    back = record_to_payload(record)
    assert sorted(back) == sorted(payload)
    for key in payload:
        assert back[key].dtype == payload[key].dtype and torch.equal(back[key], payload[key])
    content = RecordDict({"arrays": payload_to_record(payload),
                          "metrics": MetricRecord({"loss": 1.0}),
                          "config": ConfigRecord({"client-name": "GE"})})
    names = content_names(content)
    assert "arrays/a.bias" in names and "metrics/loss" in names
    private = ["x.lora_A.local.weight", "head.w"]
    assert forbidden_names(names, private_keys=private) == []
    leaky = names + ["arrays/x.lora_A.local.weight", "metrics/local_loss", "arrays/head.w"]
    # the strategy's private names, exactly: a metric that merely says "local" is fine
    assert forbidden_names(leaky, private_keys=private) == [
        "arrays/head.w", "arrays/x.lora_A.local.weight"]
    assert forbidden_names(["x.lora_A.local.weight"], private_keys=private) == [
        "x.lora_A.local.weight"]


def test_flowers_clipping_treats_a_packed_update_as_the_tensors_one_by_one():
    """fixedclipping_mod clips by the L2 norm of the whole update: packing must not change it."""
    from flwr.supercore.differential_privacy import compute_clip_model_update

    rng = np.random.default_rng(0)
    sent = {f"p{i}.weight": torch.from_numpy(rng.normal(size=(3, i + 1)).astype("f4"))
            for i in range(5)}
    trained = {name: tensor + 0.5 for name, tensor in sent.items()}

    def clipped(to_arrays):
        sent_arrays, trained_arrays = to_arrays(sent), to_arrays(trained)
        compute_clip_model_update(trained_arrays, sent_arrays, clipping_norm=1.0)
        return trained_arrays

    plain = clipped(lambda p: [p[name].numpy().copy() for name in sorted(p)])
    packed_arrays = clipped(lambda p: payload_to_record(p).to_numpy_ndarrays())
    packed = record_to_payload(ArrayRecord(dict(zip(payload_to_record(trained).keys(),
                                                    map(Array, packed_arrays), strict=True))))
    for name, expected in zip(sorted(sent), plain, strict=True):
        np.testing.assert_allclose(packed[name].numpy(), expected, rtol=1e-6)
    update = np.concatenate([(packed[n] - sent[n]).numpy().ravel() for n in sorted(sent)])
    assert np.linalg.norm(update) == pytest.approx(1.0, rel=1e-5)


# -- node-local private state -----------------------------------------------------------------
def test_private_state_comes_from_memory_else_from_the_site_folder(tmp_path):
    store = NodeStateStore(tmp_path, "run-1")
    round1 = {"x.lora_A.local.weight": torch.randn(2, 3)}
    round2 = {"x.lora_A.local.weight": torch.randn(2, 3)}
    store.save(1, round1)
    store.save(2, round2)
    memory = RecordDict()
    remember(memory, "run-1", 2, round2)
    from_memory = private_for_round(memory, store, 2)
    assert from_memory.source == "memory"
    key = "x.lora_A.local.weight"
    assert torch.equal(from_memory.payload[key], round2[key])
    # a restarted node has an empty context: the folder answers, for any kept round
    restarted = private_for_round(RecordDict(), store, 1)
    assert restarted.source == "disk" and restarted.round == 1
    assert torch.equal(restarted.payload["x.lora_A.local.weight"], round1["x.lora_A.local.weight"])
    assert private_for_round(RecordDict(), store, 0).source == "fresh"
    # memory of another run never leaks into this one
    other = RecordDict()
    remember(other, "run-0", 2, round1)
    assert private_for_round(other, store, 2).source == "disk"
    with pytest.raises(MissingPrivateStateError, match="round 3"):
        private_for_round(memory, store, 3)
    with pytest.raises(ValueError):
        NodeStateStore(tmp_path, "../escape")


def test_the_server_only_ever_holds_a_round_number_for_private_state():
    assert ref_round(private_ref(4)) == 4
    assert ref_round(None) == 0 and ref_round({}) == 0
    with pytest.raises(KitError):
        ref_round({"x.lora_A.local.weight": torch.zeros(1)})


# -- launcher ---------------------------------------------------------------------------------
def test_node_config_file_is_read_back_by_flower_exactly(tmp_path):
    values = {"client-name": "GE", "data-dir": str(tmp_path / 'a dir "quoted"' / "x\\y"),
              "n": 3, "f": 0.5, "on": True}
    path = write_flat_toml(tmp_path / "node.toml", values)
    assert parse_config_args([str(path)]) == values


def test_a_process_that_fails_to_start_is_reported_with_its_log_and_reaped(tmp_path, monkeypatch):
    failing = tmp_path / "fake-superlink"
    failing.write_text("#!/bin/sh\necho 'cannot bind: address in use' >&2\nsleep 0.2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setattr(launcher, "flower_executable", lambda name: str(failing))
    federation = launcher.LocalhostFederation(tmp_path / "fed", [launcher.NodeSpec("GE", {})],
                                          startup_timeout=20)
    with pytest.raises(KitError) as err, federation:
        pass
    message = str(err.value)
    assert "superlink exited with code 3" in message
    assert "cannot bind: address in use" in message
    assert federation.process_groups() == []


def test_stop_all_kills_the_whole_process_group(tmp_path):
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
             "'import time; time.sleep(60)']); time.sleep(60)"
    proc = processes.ManagedProcess("parent", [sys.executable, "-c", script],
                                    tmp_path / "p.log", env={"PATH": "/usr/bin:/bin"})
    proc.start()
    pgid = proc.pid
    deadline = 50
    while deadline and len(_group_members(pgid)) < 2:
        subprocess.run(["sleep", "0.1"], check=True)
        deadline -= 1
    assert len(_group_members(pgid)) == 2  # the parent and its child
    processes.stop_all([proc], grace=2)
    assert not processes.group_alive(pgid)


def test_sigterm_raises_terminated_once_and_cannot_cut_the_teardown_short():
    before = signal.getsignal(signal.SIGTERM)
    teardown_finished = False
    with pytest.raises(Terminated), terminate_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not interrupt the body")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second one, during teardown: ignored
            teardown_finished = True
    assert teardown_finished
    assert signal.getsignal(signal.SIGTERM) is before


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


# -- differential privacy -----------------------------------------------------------------------
def test_gaussian_noise_on_the_aggregate_is_calibrated_and_reproducible():
    strategy = get_strategy("med_duallora")
    uploads = [({"w": torch.zeros(200, 200)}, 1), ({"w": torch.ones(200, 200)}, 3)]
    plain = strategy.aggregate(uploads)
    noisy = GaussianNoiseOnAggregate(strategy, noise_multiplier=2.0, clipping_norm=0.5, seed=1,
                                     round_idx=3)
    first = noisy.aggregate(uploads)
    again = noisy.aggregate(uploads)
    assert torch.equal(first["w"], again["w"])
    noise = (first["w"] - plain["w"]).double().numpy()
    expected_std = 2.0 * 0.5 * (3 / 4)  # z * C * heaviest weight
    assert abs(noise.std() - expected_std) < 0.02 * expected_std
    assert abs(noise.mean()) < 0.01
    assert torch.equal(noisy(3, uploads)["w"], first["w"])  # the driver's call
    assert not torch.equal(noisy(4, uploads)["w"], first["w"])
    assert np.isfinite(noise).all()


def test_sites_clip_their_update_with_flowers_mod_only_when_dp_is_on(monkeypatch):
    from flwr.app import Message
    from flwr.supercore.task_identity import TaskIdentity

    from duallora.flower.site.client_app import optional_clipping

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    received = {"w": torch.full((10,), 2.0)}

    def request(extra: dict) -> Message:
        return Message(RecordDict({"arrays": payload_to_record(received),
                                   "config": ConfigRecord({"round": 1, **extra})}),
                       dst_node_id=1, message_type="train")

    def site(msg: Message, context: object) -> Message:  # an update of norm sqrt(10)
        return Message(RecordDict({"arrays": payload_to_record({"w": torch.full((10,), 3.0)}),
                                   "metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    clipped = optional_clipping(request({"clipping_norm": 0.5}), None, site)
    update = record_to_payload(clipped.content["arrays"])["w"] - received["w"]
    assert torch.allclose(update.norm(), torch.tensor(0.5))
    assert torch.allclose(update / update.norm(), torch.ones(10) / 10 ** 0.5)
    plain = optional_clipping(request({}), None, site)
    assert torch.equal(record_to_payload(plain.content["arrays"])["w"], torch.full((10,), 3.0))


def test_privacy_budget_comes_from_flowers_rdp_accountant_and_composes():
    from duallora.flower.server.privacy import epsilon, epsilon_curve

    one, three = epsilon(1.0, 1, 1e-5), epsilon(1.0, 3, 1e-5)
    assert 0 < one < three < 3 * one  # RDP composition is sublinear in the rounds
    assert epsilon(2.0, 3, 1e-5) < three  # more noise, less epsilon
    assert epsilon(1.0, 3, 1e-3) < three  # a looser delta, less epsilon
    assert epsilon(1.0, 0) == 0.0
    # the Gaussian mechanism's classical bound: z >= sqrt(2 ln(1.25/delta)) / eps gives
    # (eps, delta)-DP for one release, so RDP's epsilon at that z can be no larger
    delta, eps = 1e-5, 0.5
    z = math.sqrt(2 * math.log(1.25 / delta)) / eps
    assert epsilon(z, 1, delta) <= eps
    curve = epsilon_curve(1.0, 3)
    assert list(curve["round"]) == [1, 2, 3]
    assert curve["epsilon"].is_monotonic_increasing and curve["epsilon"].iloc[-1] == three
    with pytest.raises(KitError, match="dp-noise-multiplier"):
        epsilon(0.0, 2)


def test_dp_aggregator_reports_epsilon_per_round_in_the_run_metrics():
    """The driver writes the aggregator's budget as metrics rows (split ``privacy``)."""
    from duallora.federated.rounds import _log_privacy
    from duallora.federated.state import RunState
    from duallora.flower.server.privacy import epsilon
    from duallora.results.compare import run_epsilon

    noisy = GaussianNoiseOnAggregate(get_strategy("med_duallora"), noise_multiplier=1.5,
                                     clipping_norm=1.0, seed=0, delta=1e-4, sites=3)
    state = RunState(global_payload={})
    for round_idx in (1, 2):
        _log_privacy(state, round_idx, noisy)
        state.metric(round_idx, "server", "train", "clients_aggregated", 3)
    table = run_epsilon(pd.DataFrame(state.metrics))
    assert list(table["round"]) == [1, 2]
    assert table["epsilon"].tolist() == [epsilon(1.5, 1, 1e-4), epsilon(1.5, 2, 1e-4)]
    assert (table["epsilon_round"] == epsilon(1.5, 1, 1e-4)).all()
    assert (table["delta"] == 1e-4).all()
    with pytest.raises(KitError, match="dp-delta"):
        FlowerSettings(dp_delta=1.5)


def test_privacy_tradeoff_puts_runs_without_dp_at_infinite_epsilon(monkeypatch):
    """Notebook 05's accuracy-against-epsilon points: the DP run at its total budget, the
    plain run at epsilon = inf, and the DP run's budget per round."""
    from types import SimpleNamespace

    from duallora.plots.results import plot_privacy_tradeoff
    from duallora.results import compare

    def metrics(ba: float, budget: list[float]) -> pd.DataFrame:
        rows = [{"round": 2, "client": "macro", "split": "test", "metric": "balanced_accuracy",
                 "value": ba}]
        rows += [{"round": r, "client": "server", "split": "privacy", "metric": name,
                  "value": value} for r, eps in enumerate(budget, 1)
                 for name, value in (("epsilon", eps), ("epsilon_round", budget[0]),
                                     ("delta", 1e-5))]
        return pd.DataFrame(rows)

    runs = {"plain": metrics(0.7, []), "dp": metrics(0.6, [3.0, 4.5])}
    monkeypatch.setattr(compare, "load_run", lambda path: SimpleNamespace(metrics=runs[path]))
    points, budgets = compare.privacy_tradeoff({"Flower": "plain", "Flower + DP": "dp"})
    assert points.set_index("run")["epsilon"].to_dict() == {"Flower": math.inf,
                                                            "Flower + DP": 4.5}
    assert points.set_index("run")["value"].to_dict() == {"Flower": 0.7, "Flower + DP": 0.6}
    assert budgets[["round", "epsilon"]].values.tolist() == [[1, 3.0], [2, 4.5]]
    assert (budgets["run"] == "Flower + DP").all()
    assert len(plot_privacy_tradeoff(points, budgets).axes) == 2


def test_a_run_whose_app_finished_completed_even_if_the_superlink_lags() -> None:
    """The ServerApp's marker decides; the SuperLink's status can only veto with a failure."""
    def result(status: str, app_finished: bool) -> launcher.FlowerRunResult:
        return launcher.FlowerRunResult(1, status, Path("run.log"), 1.0, app_finished)

    assert result("finished:completed", False).completed
    assert result("running", True).completed
    assert not result("running", False).completed
    assert not result("finished:failed", True).completed
    assert not result("finished:stopped", True).completed


def test_node_config_cache_dir_moves_the_sites_prefix_cache(tmp_path: Path) -> None:
    """``cache-dir`` (what ``run_on_localhost(cache_dir=...)`` gives every local site) replaces
    the default ``state-dir/prefix-cache``; without it each site keeps its own."""
    from duallora.flower.localhost.run import site_nodes
    from duallora.flower.site.handlers import Site, site_config

    instructions = {"train-config": TrainConfig().to_json()}
    node = {"client-name": "GE", "data-dir": str(tmp_path), "state-dir": str(tmp_path / "s")}
    assert site_config(Site.from_node_config(node), instructions).cache_dir == \
        str(tmp_path / "s" / "prefix-cache")
    shared = Site.from_node_config({**node, "cache-dir": str(tmp_path / "shared")})
    assert site_config(shared, instructions).cache_dir == str(tmp_path / "shared")
    data = tmp_path / "data"
    data.mkdir()
    from duallora.data import REQUIRED_COLUMNS

    rows = pd.DataFrame({column: ["x", "y"] for column in REQUIRED_COLUMNS})
    rows.assign(vendor=["GE", "Siemens"], label=[0, 1], split="train").to_csv(data / "metadata.csv",
                                                               index=False)
    own = site_nodes(data, tmp_path / "work", 2)
    assert all("cache-dir" not in n.node_config for n in own)
    common = site_nodes(data, tmp_path / "work", 2, cache_dir=tmp_path / "shared")
    assert {n.node_config["cache-dir"] for n in common} == {str((tmp_path / "shared").resolve())}


def test_a_cohort_view_keeps_the_first_vendors_rows_in_order_and_links_the_volumes(
        harmonized_dir: Path, tmp_path: Path) -> None:
    """``flower_cohort(ws, n)``: what ``n`` local sites hold, for the in-process reference."""
    from duallora.data import read_metadata
    from duallora.flower.localhost.run import cohort_vendors, first_vendors
    from duallora.notebooks import experiments

    ws = experiments.Workspace(tmp_path / "ws", quick=True, seed=0)
    ws.root.mkdir()
    (ws.root / "harmonized").symlink_to(harmonized_dir)
    assert experiments.flower_cohort(ws, len(cohort_vendors(harmonized_dir))) == ws.harmonized
    two = first_vendors(harmonized_dir, 2)
    assert two == ["Siemens", "Philips"]  # flower-local --clients 2
    view = experiments.flower_cohort(ws, 2)
    assert view.parent == ws.root and (view / "volumes").is_symlink()
    original = read_metadata(harmonized_dir)
    expected = original[original["vendor"].isin(two)].reset_index(drop=True)
    pd.testing.assert_frame_equal(read_metadata(view), expected)
    with pytest.raises(KitError, match="--clients 9"):
        experiments.flower_cohort(ws, 9)


def test_a_resumed_server_keeps_the_run_key_its_run_directory_recorded(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from duallora.flower.server.server_app import recorded_run_key, run_key_for

    rundir = SimpleNamespace(root=tmp_path)
    assert recorded_run_key(tmp_path) is None
    fresh = run_key_for(rundir, resume=True)  # nothing recorded yet: a new key
    assert fresh.startswith("run-")
    (tmp_path / "flower").mkdir()
    (tmp_path / "flower" / "flower.json").write_text('{"run-key": "run-kept"}')
    assert recorded_run_key(tmp_path) == "run-kept"
    assert run_key_for(rundir, resume=True) == "run-kept"
    assert run_key_for(rundir, resume=False) not in ("run-kept", fresh)
