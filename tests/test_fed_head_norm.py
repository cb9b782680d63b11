"""The standardization in front of the heads: identity by default (CineMA's model), folds into
plain heads, pooled from clients' moments exactly, logged as round 0, and it is what lets a
head learn on features that differ little between subjects."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_fed_loop import _config  # the same tiny model and short runs

from duallora.federated.client_model import build_client_model
from duallora.federated.cohort import SplitData
from duallora.federated.head_norm import (
    client_moments,
    combine_moments,
    raw_head_inputs,
    setup_head_norm,
)
from duallora.federated.loop import run_training
from duallora.federated.prepare import prepare_cohort
from duallora.model import build_convvit


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    return build_convvit("tutorial", image_size=(32, 32, 16), embed_dim=32, depth=3, n_heads=2,
                         conv_chans=(8, 8), seed=seed).eval()


def test_default_is_identity_and_not_in_the_state_dict() -> None:
    model = _tiny_model()
    assert not any("head_input" in key for key in model.state_dict())
    x = torch.rand(2, 2, 32, 32, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cls, patches = model.suffix_features(model.forward_prefix(x, 3), 3)
        by_hand = 0.5 * (model.pred_head_dict["sax"](patches.mean(dim=1))
                         + model.pred_head_dict["cls"](cls[:, 0]))
        assert torch.allclose(model(x), by_hand, atol=1e-6)


def test_standardization_changes_logits_and_folds_back_into_plain_heads() -> None:
    model = _tiny_model()
    x = torch.rand(3, 2, 32, 32, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(x)
        mean = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
        std = torch.rand(2, 32, generator=torch.Generator().manual_seed(3)) + 0.1
        model.set_head_standardization(mean, std)
        standardized = model(x)
        assert not torch.allclose(plain, standardized, atol=1e-3)
        model.fold_head_standardization()
        assert torch.equal(model.head_input_mean, torch.zeros(2, 32))
        assert torch.allclose(model(x), standardized, atol=1e-4)


def test_bad_statistics_are_refused() -> None:
    model = _tiny_model()
    with pytest.raises(ValueError, match="shape"):
        model.set_head_standardization(torch.zeros(32), torch.ones(32))
    with pytest.raises(ValueError, match="positive"):
        model.set_head_standardization(torch.zeros(2, 32), torch.zeros(2, 32))


def test_pooled_moments_equal_the_statistics_of_the_pooled_data() -> None:
    features = torch.randn(23, 2, 5, dtype=torch.float64) * 3 + 7
    parts = [features[:4], features[4:15], features[15:]]
    moments = [{"count": torch.tensor([float(len(p))], dtype=torch.float64), "sum": p.sum(0),
                "sum_sq": (p ** 2).sum(0)} for p in parts]
    stats = combine_moments(moments)
    assert torch.allclose(stats["mean"], features.mean(0).float(), atol=1e-5)
    assert torch.allclose(stats["std"], features.std(0).float(), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        combine_moments([{"count": torch.tensor([1.0]), "sum": features[0],
                          "sum_sq": features[0] ** 2}])


def test_client_moments_match_the_cached_and_uncached_features(harmonized_dir, tmp_path) -> None:
    config = _config(harmonized_dir, tmp_path)
    model = build_client_model(config)
    cached = prepare_cohort(config, model)
    images = prepare_cohort(_config(harmonized_dir, tmp_path, prefix_cache=False), model)
    name = sorted(cached.train_clients)[0]
    a = client_moments(model, cached.train_clients[name].splits["train"],
                       cached.train_clients[name].from_block, 4)
    b = client_moments(model, images.train_clients[name].splits["train"], None, 4)
    assert cached.train_clients[name].from_block is not None
    for key in ("count", "sum", "sum_sq"):
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-5), key


def test_federated_runs_pool_statistics_and_log_them_as_round_zero(harmonized_dir,
                                                                   tmp_path) -> None:
    run = run_training(_config(harmonized_dir, tmp_path / "cache"), tmp_path / "run",
                       progress=False)
    comm = [json.loads(line) for line in (run / "comm.jsonl").read_text().splitlines()]
    round0 = [m for m in comm if m["round"] == 0]
    clients = sorted({m["client"] for m in comm if m["round"] == 1})
    assert sorted(m["client"] for m in round0 if m["direction"] == "up") == clients
    assert all(m["keys"] == ["count", "sum", "sum_sq"] for m in round0
               if m["direction"] == "up")
    assert all(m["keys"] == ["mean", "std"] for m in round0 if m["direction"] == "down")
    stats_file = run / "checkpoints" / "final" / "head_norm" / "global.safetensors"
    assert stats_file.is_file()
    # the statistics are those of every training client's features, pooled
    config = _config(harmonized_dir, tmp_path / "cache")
    model = build_client_model(config)
    cohort = prepare_cohort(config, model)
    pooled = SplitData.concat([c.splits["train"] for c in cohort.train_clients.values()])
    from_block = next(iter(cohort.train_clients.values())).from_block
    features = raw_head_inputs(model, pooled, from_block, 4)
    from safetensors.torch import load_file
    saved = load_file(str(stats_file))
    assert torch.allclose(saved["mean"], features.mean(0), atol=1e-5)
    assert torch.allclose(saved["std"], features.std(0), atol=1e-5)


def test_local_strategy_uses_each_clients_own_statistics(harmonized_dir, tmp_path) -> None:
    config = _config(harmonized_dir, tmp_path, strategy="single_site")
    model = build_client_model(config)
    cohort = prepare_cohort(config, model)
    sent = []
    owners = setup_head_norm(config, model.strategy, model, cohort,
                             send=lambda payload, name, direction: sent.append(name) or payload)
    assert sent == []  # no server: nothing travels
    assert sorted(owners) == sorted(cohort.train_clients)
    means = [owners[name]["mean"] for name in sorted(owners)]
    assert not torch.allclose(means[0], means[1])
    for name, client in cohort.train_clients.items():
        assert client.head_norm is owners[name]
    off = _config(harmonized_dir, tmp_path, head_norm=False)
    assert setup_head_norm(off, model.strategy, model, cohort) == {}


def test_standardized_head_learns_where_the_raw_head_does_not() -> None:
    """Features that differ between classes by 2% of their size: the same Adam steps fit the
    labels when the head reads standardized features, and barely move the loss otherwise."""
    generator = torch.Generator().manual_seed(0)
    n, d = 64, 32
    labels = torch.arange(n) % 2
    common = torch.randn(d, generator=generator)
    features = common + 0.02 * torch.randn(n, d, generator=generator)
    features[:, 0] += 0.02 * (2 * labels - 1)
    losses = {}
    for name, inputs in (("raw", features),
                         ("standardized", (features - features.mean(0)) / features.std(0))):
        head = torch.nn.Linear(d, 2)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        optimizer = torch.optim.Adam(head.parameters(), lr=2e-3)
        for _ in range(200):
            loss = F.cross_entropy(head(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses[name] = float(loss.detach())
    assert losses["standardized"] < 0.4 < 0.6 < losses["raw"]


def test_command_line_switch_turns_it_off(tmp_path) -> None:
    import argparse

    from duallora.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers())
    base = ["train", "--data", str(tmp_path), "--strategy", "med_duallora", "--out",
            str(tmp_path / "run")]
    assert train_command.config_from_args(parser.parse_args(base)).head_norm is True
    assert train_command.config_from_args(
        parser.parse_args([*base, "--no-head-norm"])).head_norm is False
