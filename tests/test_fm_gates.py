"""The FM gate: bootstrap math with known answers, the gate rule, and `duallora fm-gates`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from duallora.cli import main
from duallora.model.gates import comparison_passes, gate_row
from duallora.results.ba_bootstrap import balanced_accuracy, paired_ba_difference


def _labels(n: int = 200) -> np.ndarray:
    return np.array([0, 1] * (n // 2))


def test_identical_predictions_differ_by_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    labels = _labels()
    probs = rng.random(len(labels))
    result = paired_ba_difference(labels, probs, [probs.copy()])
    assert result == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_a_planted_better_model_is_ahead_with_an_interval_excluding_zero() -> None:
    rng = np.random.default_rng(1)
    labels = _labels(400)
    good = np.where(rng.random(400) < 0.9, labels, 1 - labels).astype(float)  # BA about 0.9
    weak = np.where(rng.random(400) < 0.6, labels, 1 - labels).astype(float)  # BA about 0.6
    result = paired_ba_difference(labels, good, [weak])
    assert result["diff"] == pytest.approx(
        balanced_accuracy(labels, good) - balanced_accuracy(labels, weak))
    assert 0.2 < result["diff"] < 0.4 and result["low"] > 0.1
    assert result["low"] < result["diff"] < result["high"]
    # the same draw again (deterministic by seed), and the mirror image for b - a
    assert paired_ba_difference(labels, good, [weak]) == result
    mirrored = paired_ba_difference(labels, weak, [good])
    assert mirrored["diff"] == pytest.approx(-result["diff"])


def test_balanced_accuracy_matches_sklearn_on_unbalanced_labels() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(2)
    labels = (rng.random(150) < 0.7).astype(int)
    probs = rng.random(150)
    assert balanced_accuracy(labels, probs) == pytest.approx(
        balanced_accuracy_score(labels, probs > 0.5))


def test_the_random_arm_is_the_mean_of_its_seeds() -> None:
    rng = np.random.default_rng(3)
    labels = _labels(300)
    fm = np.where(rng.random(300) < 0.9, labels, 1 - labels).astype(float)
    randoms = [np.where(rng.random(300) < q, labels, 1 - labels).astype(float)
               for q in (0.5, 0.6, 0.7)]
    result = paired_ba_difference(labels, fm, randoms)
    expected = balanced_accuracy(labels, fm) - np.mean([balanced_accuracy(labels, r)
                                                        for r in randoms])
    assert result["diff"] == pytest.approx(expected)


def test_gate_rule_needs_both_differences_at_least_005_and_above_zero() -> None:
    assert comparison_passes({"diff": 0.05, "low": 0.001})
    assert not comparison_passes({"diff": 0.049, "low": 0.01})
    assert not comparison_passes({"diff": 0.2, "low": 0.0})
    rng = np.random.default_rng(4)
    labels = _labels(400)

    def noisy(q: float) -> np.ndarray:
        return np.where(rng.random(400) < q, labels, 1 - labels).astype(float)

    probs = {"fm": noisy(0.9), "pixels": noisy(0.6), "random0": noisy(0.55),
             "random1": noisy(0.5), "random2": noisy(0.6)}
    row = gate_row(labels, probs)
    assert row["criteria_passed"]
    assert set(row["scores"]) == {*probs, "random_mean"}
    probs["pixels"] = probs["fm"].copy()  # an FM no better than pixels fails
    row = gate_row(labels, probs)
    assert not row["differences"]["fm_minus_pixels"]["passed"]
    assert row["differences"]["fm_minus_random"]["passed"] and not row["criteria_passed"]


@pytest.fixture(scope="module")
def balanced_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 balanced subjects (6 per label, enough for 5 folds) of two vendors, harmonized."""
    from data_prep.phantoms.balanced_cohorts import write_harmonized_cohort
    from data_prep.phantoms.centres import centres_by_vendor, draw_centres
    from data_prep.phantoms.sampling import draw_balanced
    from data_prep.phantoms.shifts import parse_shifts

    groups = centres_by_vendor(draw_centres(parse_shifts("acq=1,mix=0,label=0"), 0))
    draws = draw_balanced(groups["Siemens"], 6, 0, "gate-test") + draw_balanced(
        groups["Philips"], 6, 0, "gate-test")
    out = tmp_path_factory.mktemp("gate") / "cohort"
    write_harmonized_cohort(out, draws, "test", workers=1, progress=False)
    return out


def test_fm_gates_command_end_to_end(balanced_cohort: Path, tiny_weights: Path,
                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.json"
    argv = ["fm-gates", "--cohort", str(balanced_cohort), "--weights", str(tiny_weights),
            "--size", "test-tiny", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fm_minus_pixels" in printed and "not the gate's" in printed
    report = json.loads(out.read_text())
    row = report["cohorts"][0]
    assert {"fm", "pixels", "random0", "random1", "random2", "random_mean"} == set(row["scores"])
    assert row["precondition"] == {"n_subjects": 12, "disease_share": 0.5, "min_subjects": 1000,
                                   "met": False}
    assert not row["passed"] and not report["passed"]  # 12 subjects are not the gate's cohort
    cache = sorted(p.name for p in (tmp_path / "report_features").iterdir())
    assert len(cache) == 5  # fm, pixels and three random inits
    # a re-run reads the cache and gives the same report
    assert main(argv) == 0
    assert json.loads(out.read_text()) == report


def test_fm_gates_refuses_bad_input_in_one_line(tiny_weights: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["fm-gates", "--cohort", str(tmp_path), "--weights", str(tiny_weights),
                 "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--cohort" in err and "metadata.csv" in err and "\n" not in err
