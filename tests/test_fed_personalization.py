"""Orthogonal dual LoRA and FedALT, in process.

Real training of the tiny ConvViT on the small phantom cohort. Orthogonal dual LoRA is checked
against what defines it: Med-DualLoRA plus a penalty that separates the two adapters' input
subspaces (with weight 0 it *is* Med-DualLoRA, byte for byte; with its default weight the
measured overlap ends lower than Med-DualLoRA's on the same data and seed). FedALT: each site
receives the mean of the *other* sites' latest individual adapters under the rest-of-world
adapter's names, its own individual adapter is never replaced, the head and the routers never
travel, and the router mixes the two adapters per token.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer
from test_fed_loop import _KILL_SCRIPT, _config, _read

import duallora.federated.sites as sites_module
from duallora.base.rundir import RunDir
from duallora.errors import KitError
from duallora.federated.client import train_client
from duallora.federated.client_model import build_client_model
from duallora.federated.fedalt import ROUTER_ATTR, rest_of_world, rest_of_world_name
from duallora.federated.loop import run_training
from duallora.federated.orthogonal import layer_overlap, orthogonality_penalty, overlap
from duallora.federated.prepare import prepare_cohort
from duallora.federated.serialization import encode
from duallora.federated.strategies import (
    FRAME_GROUPS,
    GLOBAL_A,
    GLOBAL_B,
    HEAD,
    LEAVE_ONE_OUT,
    LOCAL_A,
    LOCAL_B,
    ORTHOGONAL,
    ROUTER,
    get_strategy,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefix_cache")


def _site_overlaps(run: Path) -> dict[str, float]:
    """Each site's normalized ||A_g A_l^T||_F after the run's last round: the global adapter
    it received and its own local adapter (from the run's checkpoint)."""
    state = RunDir(run).load_checkpoint()
    return {site: overlap({**state["global"], **private})
            for site, private in sorted(state["private"].items())}


# -- declarations ----------------------------------------------------------------------------
def test_declared_groups() -> None:
    orth, dual = get_strategy("orthogonal_duallora"), get_strategy("med_duallora")
    assert (orth.trainable, orth.shared, orth.kept) == (dual.trainable, dual.shared, dual.kept)
    assert (orth.penalty, dual.penalty) == (ORTHOGONAL, None) and orth.has_global_model
    alt = get_strategy("fedalt")
    assert alt.shared == {LOCAL_A, LOCAL_B} and alt.received_groups == {GLOBAL_A, GLOBAL_B}
    # never leave the site (the frame groups too: no server mean of them)
    assert alt.private == {HEAD, ROUTER} | FRAME_GROUPS
    assert alt.kept == alt.private | {LOCAL_A, LOCAL_B}  # the individual adapter persists
    assert alt.aggregation == LEAVE_ONE_OUT and not alt.has_global_model
    with pytest.raises(KitError, match="--orth-weight"):
        _config(Path("."), Path("."), orth_weight=-1.0)


# -- the penalty --------------------------------------------------------------------------------
def test_layer_overlap_is_a_scale_free_subspace_measure() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 16, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen))
    first, second = q[:, :3].T, q[:, 3:7].T  # orthonormal rows, disjoint subspaces
    assert float(layer_overlap(first, second)) == pytest.approx(0.0, abs=1e-10)
    assert float(layer_overlap(a, 5.0 * a)) == pytest.approx(
        float(layer_overlap(a, a)), rel=1e-6)  # independent of scale
    row = a[:1]
    assert float(layer_overlap(row, -2.0 * row)) == pytest.approx(1.0, rel=1e-6)
    mixed = torch.cat([first[:1], second[:1]])  # shares one of first's three directions
    assert 0.0 < float(layer_overlap(first, mixed)) < 1.0


def test_penalty_is_off_at_weight_zero_and_its_gradient_rotates(harmonized_dir, cache) -> None:
    config = _config(harmonized_dir, cache, strategy="orthogonal_duallora")
    model = build_client_model(config)
    assert orthogonality_penalty(model, 0.0) is None
    penalty = orthogonality_penalty(model, 1.0)
    value = penalty()
    assert float(value.detach()) == pytest.approx(overlap(model.initial) ** 2, rel=1e-5)
    value.backward()
    grads = {n: p.grad for n, p in model.params.items() if p.grad is not None}
    assert grads and all(".lora_A." in n for n in grads)  # only the A factors are compared
    for name, grad in grads.items():  # scale-free: the gradient is orthogonal to the factor
        param = model.params[name]
        cosine = float((grad * param).sum() / (grad.norm() * param.norm()))
        assert abs(cosine) < 1e-4, name


def test_orthogonal_with_weight_zero_is_med_duallora(harmonized_dir, cache, tmp_path) -> None:
    zero = run_training(_config(harmonized_dir, cache, strategy="orthogonal_duallora",
                                orth_weight=0.0), tmp_path / "zero", progress=False)
    dual = run_training(_config(harmonized_dir, cache), tmp_path / "dual", progress=False)
    for name in ("predictions.csv", "metrics.csv", "comm.jsonl"):
        assert (zero / name).read_bytes() == (dual / name).read_bytes(), name


def test_the_penalty_lowers_the_subspace_overlap(harmonized_dir, cache, tmp_path) -> None:
    """Same data, seed and init: after the run every site's global/local overlap is lower
    with the penalty than under Med-DualLoRA."""
    dual = _site_overlaps(run_training(_config(harmonized_dir, cache), tmp_path / "dual",
                                       progress=False))
    orth = _site_overlaps(run_training(_config(harmonized_dir, cache,
                                               strategy="orthogonal_duallora"),
                                       tmp_path / "orth", progress=False))
    print(f"overlap med_duallora {dual}\noverlap orthogonal_duallora {orth}")
    assert sorted(dual) == sorted(orth) and dual
    assert all(orth[site] < dual[site] for site in dual)


# -- FedALT: the pieces -------------------------------------------------------------------------
def test_rest_of_world_is_the_mean_of_the_others_renamed() -> None:
    name = "m.blocks.1.attn.q.lora_A.local.weight"
    uploads = {site: {name: torch.full((2, 3), value)}
               for site, value in (("a", 1.0), ("b", 2.0), ("c", 6.0))}
    row = rest_of_world(uploads, "a", {name: torch.zeros(2, 3)})
    assert list(row) == [rest_of_world_name(name)] and ".lora_A.global." in list(row)[0]
    assert torch.equal(row[rest_of_world_name(name)], torch.full((2, 3), 4.0))
    alone = rest_of_world({"a": uploads["a"]}, "a", {name: torch.ones(2, 3)})
    assert torch.equal(alone[rest_of_world_name(name)], torch.ones(2, 3))  # no one else yet


def test_router_mixes_the_adapters_per_token(harmonized_dir, cache) -> None:
    model = build_client_model(_config(harmonized_dir, cache, strategy="fedalt"))
    with torch.no_grad():  # give both adapters a non-zero update
        for name, param in model.params.items():
            if ".lora_B." in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    layer = next(m for m in model.module.modules() if isinstance(m, LoraLayer))
    router = getattr(layer, ROUTER_ATTR)
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(0))
    scaling = dict(layer.scaling)
    base = layer.base_layer(x)
    delta = {}
    for adapter in ("local", "global"):
        lora = layer.lora_B[adapter](layer.lora_A[adapter](x)) * scaling[adapter]
        delta[adapter] = lora.detach()
    with torch.no_grad():
        out = layer(x)  # zero-initialized router: both adapters at 1/2
        torch.testing.assert_close(out, base + 0.5 * delta["local"] + 0.5 * delta["global"])
        router.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
        weights = torch.softmax(router(x), dim=-1)
        routed = layer(x)
    torch.testing.assert_close(routed, base + weights[..., :1] * delta["local"]
                               + weights[..., 1:] * delta["global"])
    assert not torch.allclose(weights[0, 0], weights[0, 1])  # per token, not per model
    assert layer.scaling == scaling  # plain scalings again after the forward


def test_fedalt_keeps_its_individual_adapter_and_uploads_it(harmonized_dir, cache) -> None:
    config = _config(harmonized_dir, cache, strategy="fedalt")
    model = build_client_model(config)
    data = prepare_cohort(config, model).train_clients["Siemens"]
    first = train_client(model, None, None, data, config, 1)
    assert sorted(first.upload) == model.shared_names
    assert all(".lora_" in k and ".local." in k for k in first.upload)
    assert sorted(first.private) == model.kept_names
    row = {rest_of_world_name(k): v + 0.01 for k, v in first.upload.items()}
    model.set_state(row, first.private)  # the RoW adapter never overwrites the individual one
    for name, value in first.private.items():
        assert torch.equal(model.params[name].detach(), value), name
    for name, value in row.items():
        assert torch.equal(model.params[name].detach(), value), name
        assert not model.params[name].requires_grad  # frozen while the site trains
    second = train_client(model, row, first.private, data, config, 2)
    assert all(torch.equal(second.upload[k], second.private[k]) for k in second.upload)
    assert any(not torch.equal(second.upload[k], first.upload[k]) for k in first.upload)


# -- FedALT: whole runs ---------------------------------------------------------------------------
def test_fedalt_sends_each_site_the_mean_of_the_others(harmonized_dir, cache, tmp_path,
                                                       monkeypatch) -> None:
    """What each site received in round 2 is the plain mean of the other sites' round-1
    uploads; comm.jsonl counts the encoded messages; nothing private travels."""
    seen: dict[tuple[int, str], tuple] = {}
    real = sites_module.train_client

    def recording(model, received, private, data, config, round_idx):
        update = real(model, received, private, data, config, round_idx)
        seen[(round_idx, data.name)] = (received, update.upload)
        return update

    monkeypatch.setattr(sites_module, "train_client", recording)
    run = run_training(_config(harmonized_dir, cache, strategy="fedalt"), tmp_path / "alt",
                       progress=False)
    sites = sorted(name for r, name in seen if r == 1)
    assert len(sites) >= 3
    for site in sites:
        others = [seen[(1, other)][1] for other in sites if other != site]
        received = seen[(2, site)][0]
        assert sorted(received) == sorted(rest_of_world_name(k) for k in others[0])
        for key in others[0]:
            expected = torch.stack([o[key].double() for o in others]).mean(0).float()
            torch.testing.assert_close(received[rest_of_world_name(key)], expected,
                                       rtol=0, atol=1e-7)
    model = build_client_model(_config(harmonized_dir, cache, strategy="fedalt"))
    messages = [json.loads(line) for line in (run / "comm.jsonl").read_text().splitlines()]
    trained = [m for m in messages if m["round"] > 0]
    for message in trained:
        (round_idx, site) = (message["round"], message["client"])
        received, upload = seen[(round_idx, site)]
        payload = upload if message["direction"] == "up" else received
        assert message["keys"] == sorted(payload)
        assert message["bytes"] == len(encode(payload))
    names = {key for m in messages for key in m["keys"]}
    assert not names & set(model.private_names)  # head and routers stay on the sites
    assert not [n for n in names if ROUTER_ATTR in n]


@pytest.mark.parametrize("strategy", ["orthogonal_duallora", "fedalt"])
def test_resume_after_sigkill_is_bit_identical(strategy, harmonized_dir, cache, tmp_path) -> None:
    config = _config(harmonized_dir, cache, rounds=3, strategy=strategy)
    reference = run_training(config, tmp_path / "reference", progress=False)
    broken = tmp_path / "broken"
    result = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, config.to_json(), str(broken)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == -9, result.stderr[-2000:]
    run_training(config, broken, resume=True, progress=False)
    assert _read(broken) == _read(reference)


def test_fedalt_refuses_a_replacement_aggregator(harmonized_dir, cache) -> None:
    from duallora.federated.rounds import RoundRequests, apply_round
    from duallora.federated.state import RunState

    config = _config(harmonized_dir, cache, strategy="fedalt")
    strategy = get_strategy("fedalt")
    model = build_client_model(config)
    data = prepare_cohort(config, model).train_clients
    answers = {name: train_client(model, None, None, data[name], config, 1)
               for name in sorted(data)[:2]}
    asked = RoundRequests({name: None for name in answers}, {}, set())
    state = RunState(global_payload=model.shared_payload())
    with pytest.raises(KitError, match="central DP"):
        apply_round(1, dataclasses.replace(config, min_clients=1), strategy, state, asked,
                    answers, aggregate=lambda r, uploads: uploads[0][0])
