"""The training protocol options: learning-rate schedule and groups, private optimizer state,
model-selection rules. Real training of the tiny ConvViT on the small phantom cohort."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_fed_loop import _KILL_SCRIPT, _config, _read

from duallora.base.config import TrainConfig
from duallora.federated.client import (
    OPTIMIZER_PREFIX,
    Predictions,
    optimizer_groups,
    round_lr,
    split_private,
    train_client,
)
from duallora.federated.client_model import build_client_model
from duallora.federated.loop import run_training
from duallora.federated.prepare import prepare_cohort
from duallora.federated.selection import log_loss


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefix_cache")


def test_cosine_schedule_decays_from_lr_and_constant_stays():
    config = TrainConfig(lr=1e-3, rounds=4, lr_schedule="cosine")
    rates = [round_lr(config, r) for r in range(1, 5)]
    assert rates[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[2] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert round_lr(TrainConfig(lr=1e-3), 3) == 1e-3


def test_local_adapter_has_its_own_learning_rate_and_decay(harmonized_dir, cache):
    config = _config(harmonized_dir, cache, local_lr_mult=0.25, local_weight_decay=0.1)
    model = build_client_model(config)
    groups = optimizer_groups(model, config, 1)
    assert len(groups) == 2
    shared, local = groups
    local_ids = {id(p) for p in local["params"]}
    names = {n for n, p in model.params.items() if id(p) in local_ids}
    assert names and all(".lora_A.local." in n or ".lora_B.local." in n for n in names)
    assert local["lr"] == pytest.approx(0.25 * config.lr) and local["weight_decay"] == 0.1
    assert shared["lr"] == config.lr and shared["weight_decay"] == config.weight_decay
    # the single-site strategy's adapter is private but it is not a dual local adapter
    alone_config = _config(harmonized_dir, cache, strategy="single_site", local_lr_mult=0.25)
    alone = build_client_model(alone_config)
    assert len(optimizer_groups(alone, alone_config, 1)) == 1


def test_persistent_private_optimizer_carries_adams_moments(harmonized_dir, cache):
    config = _config(harmonized_dir, cache, private_optimizer="persistent")
    model = build_client_model(config)
    cohort = prepare_cohort(config, model)
    data = cohort.train_clients["Siemens"]
    first = train_client(model, None, None, data, config, 1)
    params, moments = split_private(first.private)
    assert sorted(params) == model.private_names
    assert moments and all(k.startswith(OPTIMIZER_PREFIX) for k in moments)
    steps = {k: float(v) for k, v in moments.items() if k.startswith(f"{OPTIMIZER_PREFIX}step")}
    assert set(steps.values()) == {first.metrics["steps"]}
    second = train_client(model, first.upload, first.private, data, config, 2)
    _, later = split_private(second.private)
    assert {float(v) for k, v in later.items() if "step/" in k} == {2 * first.metrics["steps"]}
    # nothing of the optimizer state is uploaded
    assert not [k for k in second.upload if k.startswith(OPTIMIZER_PREFIX)]
    fresh = train_client(model, first.upload, first.private, data,
                         dataclasses.replace(config, private_optimizer="fresh"), 2)
    assert not split_private(fresh.private)[1]
    assert any(not torch.equal(second.private[k], fresh.private[k]) for k in params)


def test_resume_with_persistent_optimizer_state_is_bit_identical(harmonized_dir, cache,
                                                                 tmp_path):
    config = _config(harmonized_dir, cache, rounds=3, private_optimizer="persistent",
                     lr_schedule="cosine")
    reference = run_training(config, tmp_path / "reference", progress=False)
    broken = tmp_path / "broken"
    result = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, config.to_json(), str(broken)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == -9, result.stderr[-2000:]
    resumed = run_training(config, broken, resume=True, progress=False)
    assert _read(resumed) == _read(reference)


@pytest.mark.parametrize("rule", ["final", "pooled-val-loss"])
def test_selection_rules_pick_one_round_for_every_site(rule, harmonized_dir, cache, tmp_path):
    config = _config(harmonized_dir, cache, rounds=3, selection=rule)
    run = run_training(config, tmp_path / rule, progress=False)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    rounds = {sel["round"] for sel in state["best"].values()}
    assert len(rounds) == 1  # the same round for every site
    metrics = pd.read_csv(run / "metrics.csv")
    losses = metrics[(metrics.client == "server") & (metrics.split == "val")
                     & (metrics.metric == "pooled_log_loss")].set_index("round")["value"]
    assert list(losses.index) == [1, 2, 3]
    chosen = rounds.pop()
    if rule == "final":
        assert chosen == 3 and state["best_global"]["round"] == 3
    else:
        assert chosen == int(losses.idxmin())


def test_log_loss_matches_its_definition():
    preds = [Predictions(["a", "b"], np.array([1, 0]), np.array([0.8, 0.4], dtype=np.float32)),
             Predictions(["c"], np.array([1]), np.array([0.5], dtype=np.float32))]
    expected = -(math.log(0.8) + math.log(0.6) + math.log(0.5)) / 3
    assert log_loss(preds) == pytest.approx(expected, rel=1e-6)


def test_steps_are_logged_for_every_training_site(harmonized_dir, cache, tmp_path):
    run = run_training(_config(harmonized_dir, cache), tmp_path / "run", progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    steps = metrics[metrics.metric == "steps"]
    assert len(steps) == 2 * 4  # 2 rounds x 4 vendors
    n = metrics[metrics.metric == "n_examples"].set_index(["round", "client"])["value"]
    for _, row in steps.iterrows():
        assert row["value"] == math.ceil(n[(row["round"], row["client"])] / 8)  # batch size 8


def test_personalized_models_are_tested_before_and_after_aggregation(harmonized_dir, cache,
                                                                     tmp_path):
    dual = run_training(_config(harmonized_dir, cache), tmp_path / "dual", progress=False)
    predictions = pd.read_csv(dual / "predictions.csv")
    before = predictions[predictions.split == "test_before_aggregation"]
    after = predictions[predictions.split == "test"]
    assert sorted(before.client.unique()) == sorted(after.client.unique())
    assert list(before.subject_id) == list(after.subject_id)
    assert not np.allclose(before.prob, after.prob)  # the averaged global part differs
    metrics = pd.read_csv(dual / "metrics.csv")
    assert not metrics[(metrics.split == "test_before_aggregation")
                       & (metrics.metric == "balanced_accuracy")].empty
    shared_only = run_training(_config(harmonized_dir, cache, strategy="fedavg_lora"),
                               tmp_path / "fedavg", progress=False)
    splits = set(pd.read_csv(shared_only / "predictions.csv").split)
    assert "test_before_aggregation" not in splits  # nothing private: no personalized model


def test_lr_choice_rule_prefers_the_lowest_loss_then_the_smaller_lr():
    from duallora.errors import KitError
    from duallora.federated.tune import choose

    assert choose({1e-3: 0.6, 2e-3: 0.5, 4e-3: 0.7}) == 2e-3
    assert choose({1e-3: 0.5, 2e-3: 0.5}) == 1e-3
    assert choose({1e-3: math.nan, 2e-3: 0.9}) == 2e-3
    with pytest.raises(KitError):
        choose({1e-3: math.nan})


def test_tune_lr_trains_the_grid_and_train_uses_its_choice(harmonized_dir, cache, tmp_path,
                                                           capsys):
    import json

    from duallora.cli import main

    common = ["--data", str(harmonized_dir), "--quick", "--fm", "none", "--model-size",
              "test-tiny", "--bootstrap", "10",
              "--cache-dir", str(cache), "--no-progress", "--max-train-per-client", "6"]
    out = tmp_path / "tune"
    assert main(["tune-lr", "--strategy", "fedavg_lora", "--out", str(out),
                 "--grid", "1e-3,4e-3", *common]) == 0
    record = json.loads((out / "tune-lr.json").read_text())
    assert record["grid"] == [1e-3, 4e-3] and record["chosen_lr"] in (1e-3, 4e-3)
    losses = {float(k): v for k, v in record["val_loss"].items()}
    assert record["chosen_lr"] == min(losses, key=lambda lr: (losses[lr], lr))
    assert "chosen lr" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--strategy", "fedavg_lora", "--out", str(run), "--lr-from",
                 str(out), *common]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == record["chosen_lr"] and config["lr_from"] == str(out)
    assert main(["train", "--strategy", "med_duallora", "--out", str(tmp_path / "other"),
                 "--lr-from", str(out), *common]) == 2  # tuned for another strategy


def test_training_flops_follow_what_a_step_runs(harmonized_dir, cache):
    from duallora.federated.flops import train_flops_per_subject

    def flops(**changes) -> int:
        config = _config(harmonized_dir, cache, **changes)
        return train_flops_per_subject(config, build_client_model(config))

    cached, uncached = flops(), flops(prefix_cache=False)
    assert 0 < cached < uncached  # the cache skips the frozen stem and prefix blocks
    # full block weights add their weight-gradient matmuls to LoRA's
    assert flops(strategy="fedavg_full") > flops(strategy="fedavg_lora")
    assert flops() == flops()  # counted, not timed


def test_cost_rows_hold_steps_and_flops(harmonized_dir, cache, tmp_path):
    config = _config(harmonized_dir, cache, local_epochs=2)
    run = run_training(config, tmp_path / "run", progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    cost = metrics[metrics.split == "cost"].set_index("metric")["value"]
    train = metrics[metrics.split == "train"]
    assert cost["steps_total"] == train[train.metric == "steps"]["value"].sum()
    subjects = train[train.metric == "n_examples"]["value"].sum()
    assert cost["train_flops_total"] == pytest.approx(
        cost["train_flops_per_subject"] * subjects * 2, rel=1e-9)
