"""``duallora evaluate``: a finished run's exported models score its test subjects again,
exactly; an upstream-style classifier is loaded strictly and scored per vendor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from duallora.base.config import TrainConfig
from duallora.base.presets import PRESETS
from duallora.cli import main
from duallora.data import load_cohort_arrays
from duallora.errors import KitError
from duallora.federated.evaluate import evaluate_model
from duallora.federated.loop import run_training
from duallora.model import build_convvit
from duallora.model.checkpoints import save_weights


@pytest.fixture(scope="module")
def finished_run(harmonized_dir, tmp_path_factory) -> Path:
    """A quick Med-DualLoRA run with a held-out vendor (every final split but one)."""
    root = tmp_path_factory.mktemp("evaluate-run")
    config = TrainConfig.from_dict({
        "data": str(harmonized_dir), "fm": "none", "model_size": "test-tiny", "rounds": 2,
        "local_epochs": 1, "bootstrap": 25, "max_train_per_client": 8,
        "cache_dir": str(root / "cache"), "strategy": "med_duallora",
        "holdout_vendor": "Canon", "device": "cpu"})
    return run_training(config, root / "run", progress=False)


@pytest.mark.parametrize("which", ["final", "last.pt"])
def test_evaluating_a_finished_run_reproduces_its_test_predictions(finished_run, tmp_path,
                                                                   which) -> None:
    model = (finished_run / "checkpoints" / "final" if which == "final"
             else finished_run / "checkpoints" / "last.pt")
    out = tmp_path / "scored"
    code = main(["evaluate", "--model", str(model), "--out", str(out),
                 "--cache-dir", str(tmp_path / "fresh-cache")])  # prefix recomputed here
    assert code == 0
    scored = pd.read_csv(out / "predictions.csv", dtype=str)
    assert list(dict.fromkeys(scored["split"])) == ["test", "test_global", "holdout"]
    ran = pd.read_csv(finished_run / "predictions.csv", dtype=str)
    ran = ran[ran["split"].isin({"test", "test_global", "holdout"})].reset_index(drop=True)
    pd.testing.assert_frame_equal(scored, ran)  # the same text: probabilities to the last bit
    metrics = pd.read_csv(out / "metrics.csv", dtype=str)
    run_metrics = pd.read_csv(finished_run / "metrics.csv", dtype=str)
    final = run_metrics[(run_metrics["round"] == "2")
                        & run_metrics["split"].isin(set(scored["split"]))]
    pd.testing.assert_frame_equal(metrics, final.reset_index(drop=True))
    assert {"macro", "pooled"} <= set(metrics["client"])
    assert "balanced_accuracy_ci_low" in set(metrics["metric"])
    record = json.loads((out / "evaluation.json").read_text())
    assert record["kind"] == "kit run" and record["strategy"] == "med_duallora"


def test_export_holds_each_sites_selected_global_payload(finished_run) -> None:
    """The personalized models need the global payload of each site's own selected round."""
    final = finished_run / "checkpoints" / "final"
    shared = sorted(p.stem for p in (final / "shared").glob("*.safetensors"))
    private = sorted(p.stem for p in (final / "private").glob("*.safetensors"))
    assert shared == private and "Canon" not in shared and shared
    state = torch.load(finished_run / "checkpoints" / "last.pt", weights_only=False)
    for name in shared:
        tensors = load_file(str(final / "shared" / f"{name}.safetensors"))
        expected = state["best"][name]["received"]
        assert sorted(tensors) == sorted(expected)
        assert all(torch.equal(tensors[k], expected[k]) for k in expected)


def _classifier(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = build_convvit("test-tiny", seed=3).eval()
    path = save_weights(model.state_dict(), tmp_path / "classifier.safetensors",
                        {"size": "test-tiny"})
    return path, model


def test_a_classifier_file_is_loaded_strictly_and_scored_per_vendor(harmonized_dir,
                                                                    tmp_path) -> None:
    path, model = _classifier(tmp_path)
    out = evaluate_model(path, harmonized_dir, tmp_path / "scored", device="cpu",
                         bootstrap=20)
    scored = pd.read_csv(out / "predictions.csv")
    preset = PRESETS["test-tiny"]
    images, frame = load_cohort_arrays(harmonized_dir, image_size=preset.image_size,
                                       crop_size=preset.crop_size)
    test = frame.reset_index(drop=True)
    rows = np.flatnonzero((test["split"] == "test").to_numpy())
    with torch.no_grad():
        expected = torch.softmax(model(torch.as_tensor(images[rows]).float()), dim=1)[:, 1]
    by_id = dict(zip(test.loc[rows, "subject_id"].astype(str), expected.numpy(), strict=True))
    assert set(scored["split"]) == {"test"} and len(scored) == len(rows)
    assert set(scored["client"]) == set(test["vendor"])
    np.testing.assert_allclose(scored["prob"].to_numpy(),
                               [by_id[str(s)] for s in scored["subject_id"]], atol=1e-6)
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["client"]) == set(test["vendor"]) | {"pooled", "macro"}
    # strictly: one tensor too many and the file is refused, with its name
    state = load_file(str(path))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "extra.safetensors"), metadata={"size": "test-tiny"})
    with pytest.raises(KitError, match="extra.safetensors"):
        evaluate_model(tmp_path / "extra.safetensors", harmonized_dir, tmp_path / "x",
                       device="cpu")
    heads = {k: v for k, v in state.items() if not k.startswith("pred_head_dict.")}
    save_file(heads, str(tmp_path / "encoder.safetensors"), metadata={"size": "test-tiny"})
    with pytest.raises(KitError, match="not a fine-tuned classifier"):
        evaluate_model(tmp_path / "encoder.safetensors", harmonized_dir, tmp_path / "y",
                       device="cpu")


def test_evaluate_bad_input_is_one_clear_line(tmp_path, harmonized_dir, capsys) -> None:
    assert main(["evaluate", "--model", str(tmp_path / "missing")]) != 0
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(KitError, match="not a run directory|no config.json"):
        evaluate_model(tmp_path / "empty", harmonized_dir, tmp_path / "out")
