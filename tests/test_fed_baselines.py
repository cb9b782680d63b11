"""The personalization baselines: FedPer, FedAvg-LoRA + local fine-tuning, FedDPA.

Real training of the tiny ConvViT on the small phantom cohort. Each strategy is checked against
what defines it: FedPer is FedAvg-LoRA with a private head; FedAvg-LoRA-FT trains exactly like
FedAvg-LoRA and only its personalized test changes; FedDPA's upload does not depend on its local
adapter (FedDPA-T trains the global adapter alone) and its inference mixes the two adapters with
instance-wise weights (``duallora.federated.dpa``).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from test_fed_loop import _KILL_SCRIPT, _config, _read

from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.federated.client import (
    evaluate_client,
    finetune_client,
    predict,
    train_client,
    training_phases,
)
from duallora.federated.client_model import build_client_model
from duallora.federated.dpa import adapter_weights, instance_weights
from duallora.federated.loop import run_training
from duallora.federated.prepare import prepare_cohort
from duallora.federated.strategies import (
    GLOBAL_A,
    GLOBAL_B,
    HEAD,
    LOCAL_A,
    LOCAL_B,
    get_strategy,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefix_cache")


def _site(config: TrainConfig, name: str = "Siemens"):
    model = build_client_model(config)
    return model, prepare_cohort(config, model).train_clients[name]


# -- declarations ----------------------------------------------------------------------------
def test_declared_groups_of_the_new_strategies() -> None:
    fedper, private_head = get_strategy("fedper"), get_strategy("fedavg_lora", head="private")
    assert (fedper.trainable, fedper.shared) == (private_head.trainable, private_head.shared)
    assert fedper.private >= {HEAD} and not fedper.has_global_model
    ft, fedavg = get_strategy("fedavg_lora_ft"), get_strategy("fedavg_lora")
    assert (ft.trainable, ft.shared, ft.finetune) == (fedavg.trainable, fedavg.shared, True)
    assert ft.has_global_model and not ft.private  # the fine-tuned parts are never uploaded
    dpa, dual = get_strategy("feddpa"), get_strategy("med_duallora")
    assert (dpa.trainable, dpa.shared, dpa.private) == (dual.trainable, dual.shared, dual.private)
    assert dpa.private >= {LOCAL_A, LOCAL_B} and dpa.has_global_model
    assert (dpa.schedule, dpa.mixing) != (dual.schedule, dual.mixing)
    for strategy in (fedper, ft, dpa):
        assert strategy.description


def test_feddpa_schedule_is_local_then_global_and_global_only_first() -> None:
    config = TrainConfig(strategy="feddpa", dpa_local_weight=0.3)
    strategy = get_strategy("feddpa")
    (only,) = training_phases(strategy, config, 1)
    assert only.adapters == ("global",) and {GLOBAL_A, GLOBAL_B, HEAD} <= only.groups
    local, shared = training_phases(strategy, config, 2)
    assert local.groups == strategy.private and set(local.adapters) == {"global", "local"}
    assert local.weights == {"local": 0.3, "global": pytest.approx(0.7)}
    assert shared.groups == strategy.shared and shared.adapters == ("global",)
    (joint,) = training_phases(get_strategy("med_duallora"), config, 2)
    assert joint.groups == get_strategy("med_duallora").trainable and joint.weights is None


def test_bad_baseline_options_are_clear_errors() -> None:
    with pytest.raises(KitError, match="--dpa-max-weight"):
        TrainConfig(strategy="feddpa", dpa_max_weight=1.5)
    with pytest.raises(KitError, match="--finetune-epochs"):
        TrainConfig(strategy="fedavg_lora_ft", finetune_epochs=-1)
    assert TrainConfig(local_epochs=3).finetune_budget == 3  # one round's budget by default
    assert TrainConfig(local_epochs=3, finetune_epochs=1).finetune_budget == 1


# -- the dynamic weighting module ---------------------------------------------------------------
def test_instance_weights_are_scaled_mean_cosine_similarities() -> None:
    test = torch.tensor([[1.0, 0.0], [2.0, 2.0], [-1.0, 0.0]])
    reference = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    alphas = instance_weights(test, reference, 0.5, 0, torch.Generator().manual_seed(0))
    root = 2 ** -0.5
    expected = [0.5 * (1 + root + 0) / 3, 0.5 * (root + 1 - root) / 3, 0.0]  # last: clipped
    torch.testing.assert_close(alphas, torch.tensor(expected, dtype=torch.float64))
    # k of M references per test row, drawn from the generator: reproducible, and each weight
    # is the mean over k distinct references
    a = instance_weights(test, reference, 1.0, 2, torch.Generator().manual_seed(7))
    b = instance_weights(test, reference, 1.0, 2, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    cos = torch.nn.functional.normalize(test.double(), dim=1) @ \
        torch.nn.functional.normalize(reference.double(), dim=1).T
    generator = torch.Generator().manual_seed(7)
    for i in range(3):
        pick = torch.randperm(3, generator=generator)[:2]
        assert a[i] == pytest.approx(float(cos[i, pick].mean().clamp(min=0.0)))
    with pytest.raises(ValueError):
        instance_weights(test, reference[:0], 0.5, 0, torch.Generator())


def test_adapter_weights_scale_each_adapters_update_and_restore(harmonized_dir, cache) -> None:
    model, _ = _site(_config(harmonized_dir, cache, strategy="feddpa"))
    with torch.no_grad():  # give both adapters a non-zero update
        for name, param in model.params.items():
            if ".lora_B." in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    layer = next(m for m in model.module.modules() if isinstance(m, LoraLayer))
    x = torch.randn(3, 5, layer.in_features, generator=torch.Generator().manual_seed(0))
    before = dict(layer.scaling)

    def out(adapters, weights=None):
        model.use_adapters(adapters)
        with torch.no_grad(), adapter_weights(model.module, weights or {}):
            return layer(x)

    base = layer.base_layer(x).detach()
    delta_g, delta_l = out(("global",)) - base, out(("local",)) - base
    torch.testing.assert_close(out(("global", "local"), {"global": 0.25, "local": 0.75}),
                               base + 0.25 * delta_g + 0.75 * delta_l)
    assert layer.scaling == before  # restored


# -- training and inference on a site ----------------------------------------------------------
def test_feddpa_upload_does_not_depend_on_the_local_adapter(harmonized_dir, cache) -> None:
    config = _config(harmonized_dir, cache, strategy="feddpa")
    model, data = _site(config)
    first = train_client(model, None, None, data, config, 1)
    initial_local = {k: v for k, v in model.initial.items() if k in model.private_names}
    assert all(torch.equal(first.private[k], initial_local[k]) for k in initial_local)
    other = {k: v + 0.05 for k, v in first.private.items()}
    a = train_client(model, first.upload, first.private, data, config, 2)
    b = train_client(model, first.upload, other, data, config, 2)
    assert all(torch.equal(a.upload[k], b.upload[k]) for k in a.upload)  # global trained alone
    assert any(not torch.equal(a.private[k], first.private[k]) for k in a.private)
    assert a.metrics["steps"] == 2 * first.metrics["steps"]  # local phase + global phase
    assert sorted(a.upload) == model.shared_names and not set(a.upload) & set(a.private)
    # contrast: Med-DualLoRA trains both adapters jointly, so its upload sees the local one
    dual_config = dataclasses.replace(config, strategy="med_duallora")
    dual, dual_data = _site(dual_config)
    start = train_client(dual, None, None, dual_data, dual_config, 1)
    shifted = {k: v + 0.05 for k, v in start.private.items()}
    c = train_client(dual, start.upload, start.private, dual_data, dual_config, 2)
    d = train_client(dual, start.upload, shifted, dual_data, dual_config, 2)
    assert any(not torch.equal(c.upload[k], d.upload[k]) for k in c.upload)


def test_feddpa_inference_mixes_adapters_per_instance(harmonized_dir, cache) -> None:
    config = _config(harmonized_dir, cache, strategy="feddpa", local_epochs=2)
    model, data = _site(config)
    first = train_client(model, None, None, data, config, 1)
    second = train_client(model, first.upload, first.private, data, config, 2)
    mixed = evaluate_client(model, second.upload, second.private, data, "val", config)
    again = evaluate_client(model, second.upload, second.private, data, "val", config)
    assert (mixed.probs == again.probs).all() and mixed.subject_ids == again.subject_ids
    # max weight 0: every instance uses the local adapter alone
    zero = dataclasses.replace(config, dpa_max_weight=0.0)
    local_only = evaluate_client(model, second.upload, second.private, data, "val", zero)
    model.set_state(second.upload, second.private)
    model.use_adapters(("local",))
    reference = predict(model, data.splits["val"], data.from_block, 16)
    model.use_adapters(model.strategy.adapters)
    torch.testing.assert_close(torch.tensor(local_only.probs), torch.tensor(reference.probs))
    # the dynamic weights change the prediction against the plain sum of both adapters
    model.set_state(second.upload, second.private)
    summed = predict(model, data.splits["val"], data.from_block, 16)
    assert not torch.allclose(torch.tensor(mixed.probs), torch.tensor(summed.probs))
    # the global-only model ignores the weighting
    global_only = evaluate_client(model, second.upload, None, data, "val", config,
                                  global_only=True)
    model.set_state(second.upload, None)
    model.use_adapters(("global",))
    plain = predict(model, data.splits["val"], data.from_block, 16)
    model.use_adapters(model.strategy.adapters)
    assert (global_only.probs == plain.probs).all()


def test_finetuning_is_deterministic_and_the_proximal_term_holds_it_close(harmonized_dir,
                                                                          cache) -> None:
    config = _config(harmonized_dir, cache, strategy="fedavg_lora_ft", finetune_epochs=3)
    model, data = _site(config)
    start = train_client(model, None, None, data, config, 1).upload
    tuned = finetune_client(model, start, None, data, config)
    assert sorted(tuned) == model.trainable_names
    assert all(torch.equal(tuned[k], v) for k, v in
               finetune_client(model, start, None, data, config).items())

    def distance(payload):
        return sum(float(((payload[k] - start[k]) ** 2).sum()) for k in start)

    held = finetune_client(model, start, None, data,
                           dataclasses.replace(config, prox_lambda=100.0))
    assert 0 < distance(held) < distance(tuned)
    assert all(torch.equal(v, start[k]) for k, v in start.items())  # the input is not changed


# -- whole runs ----------------------------------------------------------------------------------
def test_fedper_is_fedavg_lora_with_a_private_head(harmonized_dir, cache, tmp_path) -> None:
    fedper = run_training(_config(harmonized_dir, cache, strategy="fedper"), tmp_path / "fedper",
                          progress=False)
    ablation = run_training(_config(harmonized_dir, cache, strategy="fedavg_lora",
                                    head="private"), tmp_path / "ablation", progress=False)
    for name in ("predictions.csv", "metrics.csv", "comm.jsonl"):
        assert (fedper / name).read_bytes() == (ablation / name).read_bytes(), name
    predictions = pd.read_csv(fedper / "predictions.csv")
    assert "test_global" not in set(predictions.split)  # the head is not shared


def test_fedavg_lora_ft_trains_as_fedavg_lora_and_fine_tunes_on_site(harmonized_dir, cache,
                                                                     tmp_path) -> None:
    ft = run_training(_config(harmonized_dir, cache, strategy="fedavg_lora_ft"),
                      tmp_path / "ft", progress=False)
    plain = run_training(_config(harmonized_dir, cache, strategy="fedavg_lora"),
                         tmp_path / "plain", progress=False)
    assert (ft / "comm.jsonl").read_bytes() == (plain / "comm.jsonl").read_bytes()
    a, b = pd.read_csv(ft / "predictions.csv"), pd.read_csv(plain / "predictions.csv")
    for split in ("test_global", "holdout"):  # the global model is the un-fine-tuned average
        pd.testing.assert_frame_equal(a[a.split == split].reset_index(drop=True),
                                      b[b.split == split].reset_index(drop=True))
    test_a, test_b = a[a.split == "test"], b[b.split == "test"]
    assert list(test_a.subject_id) == list(test_b.subject_id)
    assert not (test_a.prob.values == test_b.prob.values).all()  # personalized by fine-tuning
    final = ft / "checkpoints" / "final"
    vendors = sorted(set(test_a.client))
    for vendor in vendors:
        tuned = load_file(str(final / "finetuned" / f"{vendor}.safetensors"))
        assert tuned and (final / "peft" / vendor / "global" / "adapter_config.json").is_file()
    global_payload = load_file(str(final / "global.safetensors"))
    assert any(not torch.equal(tuned[k], global_payload[k]) for k in global_payload)


@pytest.mark.parametrize("strategy", ["feddpa", "fedavg_lora_ft"])
def test_resume_after_sigkill_is_bit_identical(strategy, harmonized_dir, cache, tmp_path) -> None:
    config = _config(harmonized_dir, cache, rounds=3, strategy=strategy)
    reference = run_training(config, tmp_path / "reference", progress=False)
    broken = tmp_path / "broken"
    result = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, config.to_json(), str(broken)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == -9, result.stderr[-2000:]
    run_training(config, broken, resume=True, progress=False)
    assert _read(broken) == _read(reference)


def test_feddpa_cost_rows_count_both_phases(harmonized_dir, cache, tmp_path) -> None:
    run = run_training(_config(harmonized_dir, cache, strategy="feddpa"), tmp_path / "dpa",
                       progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    cost = metrics[metrics.split == "cost"].set_index("metric")["value"]
    examples = metrics[(metrics.split == "train") & (metrics.metric == "n_examples")]
    passes = sum(row.value * (1 if row.round == 1 else 2) for row in examples.itertuples())
    assert cost["train_flops_total"] == pytest.approx(cost["train_flops_per_subject"] * passes,
                                                      rel=1e-9)  # local_epochs = 1
    steps = metrics[(metrics.split == "train") & (metrics.metric == "steps")]
    assert (steps[steps["round"] == 2]["value"].values
            == 2 * steps[steps["round"] == 1]["value"].values).all()
