"""``--device`` and ``--precision``: bf16 autocast trains and evaluates on the CPU, fp32 is the
plain PyTorch loop (bit for bit), what travels stays fp32, the prefix cache is stored in the
compute precision, a Flower site's node config picks its own device, settings are checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from duallora.base.config import TrainConfig
from duallora.base.device import OptimizerStep, autocast, resolve_device, to_compute
from duallora.cli import main
from duallora.errors import KitError
from duallora.federated.client import (
    class_weights,
    client_seed,
    optimizer_groups,
    set_mode,
    train_client,
)
from duallora.federated.client_model import build_client_model
from duallora.federated.head_norm import apply_head_norm
from duallora.federated.prefix_cache import clear_memory, prefix_states
from duallora.federated.prepare import prepare_cohort
from duallora.federated.serialization import encode


def _config(data: Path, cache: Path, **changes) -> TrainConfig:
    values = {"data": str(data), "fm": "none", "model_size": "test-tiny", "rounds": 2,
              "local_epochs": 1, "bootstrap": 20, "max_train_per_client": 6,
              "cache_dir": str(cache), "strategy": "med_duallora", "device": "cpu"}
    values.update(changes)
    return TrainConfig.from_dict(values)


def test_bf16_on_cpu_trains_and_evaluates_with_fp32_messages(harmonized_dir, tmp_path) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        code = main(["train", "--data", str(harmonized_dir), "--strategy", "med_duallora",
                     "--out", str(out), "--quick", "--fm", "none", "--model-size", "test-tiny",
                     "--bootstrap", "20", "--cache-dir", str(tmp_path / f"cache-{precision}"),
                     "--device", "cpu", "--precision", precision, "--no-progress"])
        assert code == 0
        runs[precision] = out
    config = json.loads((runs["bf16"] / "config.json").read_text())
    assert config["device"] == "cpu" and config["precision"] == "bf16"
    preds = {p: pd.read_csv(run / "predictions.csv") for p, run in runs.items()}
    assert preds["bf16"]["prob"].between(0, 1).all()
    assert set(preds["bf16"]["split"]) == set(preds["fp32"]["split"])
    # the same subjects, but other numbers: the arithmetic really ran in bf16
    assert list(preds["bf16"]["subject_id"]) == list(preds["fp32"]["subject_id"])
    assert not np.array_equal(preds["bf16"]["prob"].to_numpy(), preds["fp32"]["prob"].to_numpy())
    # the wire does not change: every message has the same keys and bytes in both precisions
    comm = {p: [json.loads(line) for line in (run / "comm.jsonl").read_text().splitlines()]
            for p, run in runs.items()}
    assert [(m["keys"], m["bytes"]) for m in comm["bf16"]] == \
        [(m["keys"], m["bytes"]) for m in comm["fp32"]]
    exported = runs["bf16"] / "checkpoints" / "final" / "global.safetensors"
    assert {t.dtype for t in load_file(str(exported)).values()} == {torch.float32}
    # the bf16 prefix cache is stored in bf16, at half the fp32 cache's size
    sizes = {}
    for precision in runs:
        files = sorted((tmp_path / f"cache-{precision}").glob("prefix-*.safetensors"))
        assert files
        dtypes = {t.dtype for t in load_file(str(files[0])).values()}
        assert dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}
        sizes[precision] = sum(f.stat().st_size for f in files)
    assert sizes["bf16"] < 0.52 * sizes["fp32"]
    # and the bf16 run's exported models score its test subjects again, exactly
    evaluated = tmp_path / "evaluated"
    assert main(["evaluate", "--model", str(runs["bf16"]), "--out", str(evaluated),
                 "--cache-dir", str(tmp_path / "cache-again")]) == 0
    again = pd.read_csv(evaluated / "predictions.csv")
    ran = preds["bf16"][preds["bf16"]["split"].isin(set(again["split"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, ran)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_uploads_and_private_state_are_fp32_host_tensors(precision, harmonized_dir,
                                                         tmp_path) -> None:
    config = _config(harmonized_dir, tmp_path, precision=precision,
                     private_optimizer="persistent")
    model = build_client_model(config)
    cohort = prepare_cohort(config, model)
    client = cohort.train_clients[sorted(cohort.train_clients)[0]]
    update = train_client(model, None, None, client, config, round_idx=1)
    for payload in (update.upload, update.private):
        assert payload
        assert {t.dtype for t in payload.values()} == {torch.float32}
        assert {t.device.type for t in payload.values()} == {"cpu"}
    reference = _config(harmonized_dir, tmp_path, precision="fp32")
    fp32_model = build_client_model(reference)
    fp32_update = train_client(fp32_model, None, None,
                               prepare_cohort(reference, fp32_model).train_clients[client.name],
                               reference, round_idx=1)
    assert len(encode(update.upload)) == len(encode(fp32_update.upload))


def test_fp32_training_is_exactly_the_plain_pytorch_loop(harmonized_dir, tmp_path) -> None:
    """At fp32 on the CPU the device layer adds nothing: the same tensors, bit for bit, as a
    hand-written forward / cross-entropy / backward / AdamW loop."""
    config = _config(harmonized_dir, tmp_path, local_epochs=2, lora_dropout=0.1, batch_size=4)
    model = build_client_model(config)
    client = prepare_cohort(config, model).train_clients["Siemens"]
    update = train_client(model, None, None, client, config, round_idx=1)

    plain = build_client_model(config)
    train = client.splits["train"]
    seed = client_seed(config.seed, 1, client.name)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    plain.set_state(None, None)
    plain.use_adapters(plain.strategy.adapters)
    apply_head_norm(plain, client.head_norm)
    optimizer = torch.optim.AdamW(optimizer_groups(plain, config, 1))
    weights = class_weights(train.labels)
    set_mode(plain, training=True)
    for _ in range(config.local_epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), config.batch_size):
            batch = train.take(order[start:start + config.batch_size])
            loss = F.cross_entropy(plain.forward(batch.inputs, client.from_block),
                                   batch.labels, weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    expected = plain.shared_payload()
    assert sorted(update.upload) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(update.upload[name], tensor), name


def test_autocast_helpers_are_no_ops_at_fp32_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    x = torch.rand(3, 4)
    assert to_compute({"x": x}, cpu)["x"] is x              # no copy
    assert to_compute({"x": x.bfloat16()}, cpu)["x"].dtype == torch.float32
    with autocast(cpu, "fp32"):
        assert (x @ x.T).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (x @ x.T).dtype == torch.bfloat16
    layer = torch.nn.Linear(4, 1)
    step = OptimizerStep(torch.optim.SGD(layer.parameters(), lr=0.1), cpu, "fp16")
    assert step.scaler is None                              # GradScaler only on CUDA
    before = layer.weight.detach().clone()
    step(layer(x).sum())
    assert not torch.equal(before, layer.weight)


def test_prefix_cache_in_bf16_is_half_the_bytes_and_close(harmonized_dir, tmp_path) -> None:
    config = _config(harmonized_dir, tmp_path)
    model = build_client_model(config)
    images = torch.rand((5, 2, 32, 32, 16), generator=torch.Generator().manual_seed(0))
    clear_memory()
    fp32 = prefix_states(model.core, images, 1, 2, tmp_path)
    bf16 = prefix_states(model.core, images, 1, 2, tmp_path, torch.device("cpu"), "bf16")
    assert len(list(tmp_path.glob("prefix-*.safetensors"))) == 2  # two keys, two files
    assert set(fp32) == set(bf16)
    for key in fp32:
        assert bf16[key].dtype == torch.bfloat16 and fp32[key].dtype == torch.float32
        assert bf16[key].element_size() * 2 == fp32[key].element_size()
        scale = float(fp32[key].abs().max())
        assert float((bf16[key].float() - fp32[key]).abs().max()) <= 0.05 * scale + 1e-3
    clear_memory()  # from disk, the same bf16 tensors
    again = prefix_states(model.core, images, 1, 2, tmp_path, torch.device("cpu"), "bf16")
    assert all(torch.equal(again[k], bf16[k]) for k in bf16)


def test_device_and_precision_are_checked(monkeypatch) -> None:
    with pytest.raises(KitError, match="--device must be"):
        TrainConfig(device="gpu")
    with pytest.raises(KitError, match="--precision must be"):
        TrainConfig(precision="fp8")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(KitError, match="no CUDA GPU"):
        resolve_device("cuda:1")


def test_flower_node_config_device_overrides_the_run(tmp_path) -> None:
    from duallora.flower.site.handlers import Site, site_config

    run = TrainConfig(device="cuda", precision="bf16")
    instructions = {"train-config": json.dumps(json.loads(run.to_json()))}
    node = {"client-name": "Siemens", "data-dir": str(tmp_path), "state-dir": str(tmp_path)}
    own = Site.from_node_config({**node, "device": "cuda:1"})
    assert own.device == "cuda:1"
    config = site_config(own, instructions)
    assert config.device == "cuda:1" and config.precision == "bf16"
    plain = site_config(Site.from_node_config(node), instructions)
    assert plain.device == "cuda"


def test_pretrain_in_bf16_keeps_fp32_weights() -> None:
    from duallora.model.pretrain import PretrainConfig, train_mae

    frames = torch.rand((8, 1, 32, 32, 4), generator=torch.Generator().manual_seed(0))
    cfg = PretrainConfig(size="tutorial", image_size=(32, 32, 4), epochs=1, batch_size=4)
    logs = {}
    for precision in ("fp32", "bf16"):
        model, logs[precision] = train_mae(frames, cfg, progress=False, device="cpu",
                                           precision=precision)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    losses = {p: [row["loss"] for row in log] for p, log in logs.items()}
    assert all(np.isfinite(losses["bf16"]))
    assert losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
