"""duallora.results.metrics and .stats against scikit-learn / scipy on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from duallora.results.metrics import binary_metrics, grouped_metrics, roc_auc
from duallora.results.stats import (
    across_seeds,
    bootstrap_ci,
    metric_statistic,
    paired_bootstrap,
    paired_permutation,
)


def _fixed_inputs(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.65).astype(int)
    probs = np.clip(0.35 * labels + rng.random(n) * 0.7, 0, 1).round(2)  # rounding -> ties
    return labels, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_scikit_learn(seed: int) -> None:
    labels, probs = _fixed_inputs(seed)
    preds = (probs >= 0.5).astype(int)
    ours = binary_metrics(labels, probs)
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert ours["sensitivity"] == pytest.approx(skm.recall_score(labels, preds))
    assert ours["specificity"] == pytest.approx(skm.recall_score(labels, preds, pos_label=0))
    assert ours["auc"] == pytest.approx(skm.roc_auc_score(labels, probs))
    assert ours["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, preds))
    assert ours["f1"] == pytest.approx(skm.f1_score(labels, preds))
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))


def test_undefined_metrics_are_nan_not_zero() -> None:
    labels = np.array([1, 1, 1])
    probs = np.array([0.9, 0.2, 0.7])
    values = binary_metrics(labels, probs)
    assert math.isnan(values["specificity"]) and math.isnan(values["auc"])
    assert values["balanced_accuracy"] == pytest.approx(2 / 3)  # only sensitivity is defined
    assert math.isnan(roc_auc(np.array([0, 0]), np.array([0.1, 0.2])))


def test_grouped_metrics_pooled_and_macro() -> None:
    labels, probs = _fixed_inputs(3, n=80)
    groups = np.array(["A", "B"] * 40)
    values = grouped_metrics(labels, probs, groups)
    for group in ("A", "B"):
        keep = groups == group
        assert values[group]["auc"] == pytest.approx(skm.roc_auc_score(labels[keep], probs[keep]))
    assert values["pooled"]["auc"] == pytest.approx(skm.roc_auc_score(labels, probs))
    assert values["macro"]["balanced_accuracy"] == pytest.approx(
        0.5 * (values["A"]["balanced_accuracy"] + values["B"]["balanced_accuracy"]))


def test_bootstrap_ci_brackets_estimate_and_is_seeded() -> None:
    labels, probs = _fixed_inputs(4, n=100)
    groups = np.array(["A", "B", "C", "D"] * 25)
    statistic = metric_statistic("balanced_accuracy", "pooled")
    est, low, high = bootstrap_ci(labels, probs, groups, statistic, n_boot=300, seed=1)
    assert low < est < high
    assert 0.05 < high - low < 0.5
    assert bootstrap_ci(labels, probs, groups, statistic, n_boot=300, seed=1) == (est, low, high)
    macro = metric_statistic("balanced_accuracy", "macro")
    assert bootstrap_ci(labels, probs, groups, macro, n_boot=50, seed=1)[0] == pytest.approx(
        grouped_metrics(labels, probs, groups)["macro"]["balanced_accuracy"])


def test_paired_tests_detect_a_real_difference_and_not_a_null_one() -> None:
    labels, _ = _fixed_inputs(5, n=120)
    groups = np.array(["A", "B"] * 60)
    good = np.where(labels == 1, 0.8, 0.2)
    rng = np.random.default_rng(0)
    coin = rng.random(len(labels))
    statistic = metric_statistic("balanced_accuracy")
    strong = paired_bootstrap(labels, good, coin, groups, statistic, n_boot=300, seed=0)
    assert strong["diff"] > 0.3 and strong["low"] > 0 and strong["p"] < 0.01
    same = paired_bootstrap(labels, good, good, groups, statistic, n_boot=100, seed=0)
    assert same["diff"] == 0 and same["p"] == 1.0
    perm = paired_permutation(labels, good, coin, groups, statistic, n_perm=300, seed=0)
    assert perm["p"] < 0.01
    null = paired_permutation(labels, coin, 1 - coin, groups, statistic, n_perm=300, seed=0)
    assert null["p"] > 0.05


def test_across_seeds_matches_scipy() -> None:
    from scipy import stats

    a = np.array([0.71, 0.74, 0.69, 0.75, 0.73])
    b = np.array([0.65, 0.70, 0.66, 0.69, 0.70])
    result = across_seeds(a, b)
    assert result["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result["mean_diff"] == pytest.approx(float(np.mean(a - b)))
    with pytest.raises(ValueError):
        across_seeds(a[:1], b[:1])


def test_average_ranks_match_scipy() -> None:
    from scipy.stats import rankdata

    from duallora.results.metrics import average_ranks

    values = np.array([0.3, 0.1, 0.3, 0.9, 0.1, 0.1, 0.5])
    np.testing.assert_array_equal(average_ranks(values), rankdata(values))


def test_bootstrap_metrics_agrees_with_single_metric_version() -> None:
    from duallora.results.stats import bootstrap_metrics

    labels, probs = _fixed_inputs(6, n=90)
    groups = np.array(["A", "B", "C"] * 30)
    both = bootstrap_metrics(labels, probs, groups, ("auc", "sensitivity"), "macro",
                             n_boot=200, seed=3)
    _, low, high = bootstrap_ci(labels, probs, groups, metric_statistic("auc", "macro"),
                                n_boot=200, seed=3)
    assert both["auc"] == pytest.approx((low, high))
    assert both["sensitivity"][0] < both["sensitivity"][1]
