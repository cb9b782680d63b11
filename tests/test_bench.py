"""Benchmarks: bytes accounting, timing summaries, reports, and gpu.py on CPU at tiny sizes.

No timing is asserted (speed goals are measured by ``make bench``); these tests check that the
measurements measure the right thing.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from duallora.base.config import STRATEGY_NAMES, TrainConfig
from duallora.errors import KitError
from duallora.federated.client_model import build_client_model
from duallora.federated.fedalt import rest_of_world_name
from duallora.federated.serialization import decode, encode
from duallora.federated.strategies import MEAN
from perf import costs, measure, report, timing

REPO = Path(__file__).resolve().parents[1]
FLOAT32 = 4


def _config(strategy: str, **extra) -> TrainConfig:
    return TrainConfig(strategy=strategy, fm="none", model_size="test-tiny", **extra)


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {name: costs.strategy_costs(build_client_model(_config(name)), n_clients=4)
            for name in STRATEGY_NAMES}


def test_message_bytes_are_the_serialized_payloads(rows) -> None:
    for name in STRATEGY_NAMES:
        model = build_client_model(_config(name))
        row = rows[name]
        if not model.strategy.federated:
            assert row["upload_bytes"] == row["download_bytes"] == 0, name
            continue
        upload = model.shared_payload()
        blob = encode(upload)
        assert row["upload_bytes"] == len(blob)
        assert sorted(decode(blob)) == model.shared_names
        # float32 data plus a small safetensors header (JSON: name, dtype, shape, offsets)
        data = FLOAT32 * row["shared_params"]
        assert data < row["upload_bytes"] <= data + 8 + 200 * len(upload)
        if model.strategy.aggregation == MEAN:  # the average has the same names and shapes
            assert row["download_bytes"] == row["upload_bytes"]
        else:  # FedALT: the same shapes under the rest-of-world adapter's names
            row_payload = {rest_of_world_name(k): v for k, v in upload.items()}
            assert row["download_bytes"] == len(encode(row_payload)) != row["upload_bytes"]
        assert row["upload_bytes_per_round"] == 4 * row["upload_bytes"]
        assert row["download_bytes_per_round"] == 4 * row["download_bytes"]


def test_strategy_byte_ordering(rows) -> None:
    up = {name: rows[name]["upload_bytes"] for name in STRATEGY_NAMES}
    # Med-DualLoRA sends what FedIT sends (global A, B and head); the local adapter stays home.
    assert up["med_duallora"] == up["fedavg_lora"]
    assert rows["med_duallora"]["private_params"] > 0
    assert rows["med_duallora"]["trainable_params"] == (rows["med_duallora"]["shared_params"]
                                                        + rows["med_duallora"]["private_params"])
    assert up["fedsa_lora"] < up["fedavg_lora"] and up["ffa_lora"] < up["fedavg_lora"]
    # the personalization baselines: FedDPA moves Med-DualLoRA's tensors, FedAvg-LoRA-FT
    # FedAvg-LoRA's (its fine-tuning never travels), FedPer everything but the head
    assert up["feddpa"] == up["med_duallora"]
    assert rows["feddpa"]["private_params"] == rows["med_duallora"]["private_params"]
    assert up["fedavg_lora_ft"] == up["fedavg_lora"]
    assert rows["fedavg_lora_ft"]["private_params"] == 0
    assert up["fedper"] < up["fedavg_lora"]
    # orthogonal dual LoRA moves Med-DualLoRA's tensors (the penalty is computed on site);
    # FedALT uploads its individual adapter (no head) and keeps head and routers
    assert up["orthogonal_duallora"] == up["med_duallora"]
    assert rows["fedalt"]["shared_params"] < rows["fedavg_lora"]["shared_params"]
    assert rows["fedalt"]["private_params"] > 0
    assert rows["fedper"]["shared_params"] + rows["fedper"]["private_params"] == \
        rows["fedavg_lora"]["shared_params"]
    assert up["fedavg_full"] > max(v for k, v in up.items() if k != "fedavg_full")
    assert rows["fedavg_full"]["total_params"] == rows["fedavg_full"]["trainable_params"] + \
        sum(p.numel() for n, p in build_client_model(_config("fedavg_full")).params.items()
            if not p.requires_grad)


def test_summary_statistics_and_repeat_counts() -> None:
    summary = timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0], warmup=1)
    assert (summary.median, summary.q1, summary.q3, summary.min, summary.max) == (3, 2, 4, 1, 5)
    assert summary.n == 5 and summary.warmup == 1
    calls = []
    result, last = timing.repeat_timing(lambda: calls.append(len(calls)) or len(calls), 3,
                                        warmup=2, before=lambda: calls.append("reset"))
    assert result.n == 3 and last == len(calls)
    assert calls.count("reset") == 5
    order = []
    timings, _ = timing.interleaved_timing({"a": lambda: order.append("a"),
                                            "b": lambda: order.append("b")}, 2, warmup=1)
    assert order == ["a", "b"] * 3 and timings["a"].n == timings["b"].n == 2
    with pytest.raises(ValueError):
        timing.summarize([])
    before = timing.current_rss_bytes()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert timing.peak_rss_bytes() >= before + 32 * 2**20 and float(block[-1]) == 1.0


def test_one_training_step_per_strategy_on_synthetic_subjects(tmp_path) -> None:
    config = _config("med_duallora", cache_dir=str(tmp_path))
    row = measure.measure_strategy(config, repeats=1, warmup=0, step_batch=2)
    assert row["timed"] == "step" and row["steps"] == 1 and row["n_train"] == 2
    assert row["prefix_cache"] and row["from_block"] == 1  # blocks 1, 2 adapted of 3
    assert row["step_seconds"]["n"] == 1 and row["step_seconds"]["median"] > 0
    model = build_client_model(config)
    state = model.core.forward_prefix(torch.rand(1, 2, 32, 32, 16), 1)
    assert row["input_bytes_per_subject"] == sum(t.numel() * t.element_size()
                                                 for t in state.values())
    assert row["peak_rss_bytes"] >= row["rss_before_training_bytes"] > 0
    full = measure.measure_strategy(_config("fedavg_full", prefix_cache=False), repeats=1,
                                    warmup=0, step_batch=2)
    assert not full["prefix_cache"] and full["input_bytes_per_subject"] == 2 * 32 * 32 * 16 * 4


def test_merged_inference_computes_the_same_logits() -> None:
    result = measure.measure_inference(_config("med_duallora"), batch=2, repeats=1, warmup=0)
    assert set(result["seconds"]) == {"base", "unmerged", "merged"}
    assert result["max_abs_diff_merged_vs_unmerged"] < 1e-4
    assert result["merged_over_base"] > 0 and math.isfinite(result["unmerged_over_base"])


def test_prefix_cache_round_matches_full_round(harmonized_dir: Path) -> None:
    config = _config("med_duallora", data=str(harmonized_dir), local_epochs=1,
                     max_train_per_client=4)
    result = measure.measure_prefix_cache(config, repeats=1, warmup=0)
    assert result["from_block"] == 1
    assert result["max_abs_diff_logits"] < 1e-5
    assert len(result["loss_cached"]) == len(result["loss_full"]) == len(result["n_train"])
    assert result["loss_cached"] == pytest.approx(result["loss_full"], abs=1e-4)
    assert result["speedup"] > 0


def test_targets_and_readme_block(tmp_path, rows) -> None:
    results = {"strategies": {"base": [rows["med_duallora"], rows["fedavg_full"]]},
               "inference": {"merged_over_base": 1.2, "unmerged_over_base": 1.3}}
    targets = {t["target"].split(" ")[0]: t for t in report.evaluate_targets(results)}
    ratio = rows["med_duallora"]["upload_bytes"] / rows["fedavg_full"]["upload_bytes"]
    upload = targets["med_duallora"]
    assert upload["value"] == pytest.approx(ratio) and upload["met"] == (ratio <= 0.01)
    assert targets["merged-adapter"]["met"] is False
    assert targets["make"]["met"] is None and targets["prefix"]["met"] is None
    table = report.markdown({**results, "targets": list(targets.values())})
    assert "| med_duallora |" in table and "MISSED" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\noutro\n")
    report.update_readme(readme, table)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| med_duallora |" in text
    readme.write_text("no markers\n")
    with pytest.raises(KitError, match="bench:start"):
        report.update_readme(readme, table)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "perf" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_on_cpu_tiny(capsys) -> None:
    gpu = _load_script("gpu.py")
    assert gpu.main(["--device", "cpu", "--tiny"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["adapted_blocks"] == [1, 2] and result["prefix_upto_block"] == 1
    assert set(result["train"]) == {"fp32_full", "fp32_cached", "bf16_full", "bf16_cached"}
    assert all(r["samples_per_second"] > 0 for r in result["train"].values())
    # The cached prefix gives the same model: same data, same init -> same loss (fp32).
    assert result["train"]["fp32_cached"]["final_loss"] == pytest.approx(
        result["train"]["fp32_full"]["final_loss"], abs=1e-5)
    assert result["prefix"]["fp32"]["bytes_per_subject"] > 0
    for precision in ("fp32", "bf16"):
        assert set(result["eval"][precision]) >= {"plain", "unmerged", "merged"}


def test_gpu_paper_scale_cpu_tiny_runs_the_protocol(capsys) -> None:
    """--paper --cpu-tiny: the kit's loop for strategies x seeds (in two worker processes),
    phases timed, one JSON line; then the time guard in this process."""
    gpu = _load_script("gpu.py")
    assert gpu.main(["--paper", "--cpu-tiny", "--seeds", "0", "1", "--strategies",
                     "single_site", "med_duallora", "--jobs", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["mode"] == "cpu-tiny" and result["precision"] == "bf16"
    assert result["jobs"] == 2 and result["prefix_warmup_seconds"] > 0  # two worker processes
    assert result["subjects"] == 40 and result["n_train"] == sum(
        v.get("train", 0) for v in result["split"].values())
    assert result["runs_done"] == result["runs_planned"] == 4 and result["stopped"] is None
    assert result["failed"] == []
    assert result["seeds_complete"] == [0, 1] and "projection" not in result
    assert result["paired_tests"] == 2  # single_site against med_duallora, per seed
    assert set(result["per_strategy"]) == {"single_site", "med_duallora"}
    for run in result["runs"]:
        seconds = run["seconds"]
        assert seconds["total"] >= seconds["rounds"] > 0 and seconds["prefix"] > 0
        assert 0 <= run["test_macro_balanced_accuracy"] <= 1
    assert result["prefix_cache"]["dtypes"] == ["torch.bfloat16"]  # stored in bf16
    # the time guard: at least one run, then a labelled projection for the rest
    assert gpu.main(["--paper", "--cpu-tiny", "--seeds", "0", "1", "--strategies",
                     "med_duallora", "--budget-seconds", "0"]) == 0
    guarded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert guarded["runs_done"] == 1 and guarded["runs_planned"] == 2
    assert guarded["stopped"].startswith("time guard")
    projection = guarded["projection"]
    assert "PROJECTION" in projection["label"]
    assert projection["all_runs_seconds"] > guarded["runs"][0]["seconds"]["total"]


def test_bench_cli_rejects_unknown_section() -> None:
    run = _load_script("run.py")
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--skip", "nothing"])
    assert exit_info.value.code == 2


def test_round_times_read_in_round_order(tmp_path) -> None:
    from perf.flower import round_seconds

    (tmp_path / "timing.json").write_text(json.dumps({"rounds": {"10": 3.0, "2": 2.0, "1": 1.0}}))
    assert round_seconds(tmp_path) == [1.0, 2.0, 3.0]
    with pytest.raises(KitError, match="timing"):
        round_seconds(tmp_path / "missing")
