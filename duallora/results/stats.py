"""Uncertainty and significance for the metrics of ``duallora.results.metrics``.

- ``bootstrap_ci``: percentile 95% interval, resampling subjects within each vendor (so every
  replicate keeps the cohort's vendor mix); works for per-vendor, pooled and macro metrics.
- ``paired_bootstrap``: two strategies on the *same* test subjects; resample subjects once per
  replicate for both, so the interval and p-value are for the difference.
- ``paired_permutation``: exact-in-spirit sign-flip test, swapping the two strategies'
  predictions subject by subject.
- ``across_seeds``: paired t-test and Wilcoxon signed-rank over per-seed summary metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats as sps

from duallora.results.metrics import binary_metrics, grouped_metrics

Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


def metric_statistic(metric: str, scope: str = "pooled") -> Statistic:
    """A function ``(labels, probs, groups) -> value`` for ``metric`` at ``scope``
    (``pooled``, ``macro`` or a vendor name)."""
    def statistic(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray) -> float:
        if scope == "pooled":
            return binary_metrics(labels, probs)[metric]
        values = grouped_metrics(labels, probs, groups)
        return values[scope][metric] if scope in values else math.nan
    return statistic


def _resample_index(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Subjects drawn with replacement within each group (group sizes kept)."""
    parts = []
    for group in sorted(set(groups.tolist())):
        members = np.flatnonzero(groups == group)
        parts.append(rng.choice(members, size=len(members), replace=True))
    return np.concatenate(parts)


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray,
                 statistic: Statistic, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """``(estimate, low, high)``; replicates where the metric is undefined are ignored."""
    labels, probs, groups = np.asarray(labels), np.asarray(probs), np.asarray(groups)
    estimate = statistic(labels, probs, groups)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        index = _resample_index(groups, rng)
        values.append(statistic(labels[index], probs[index], groups[index]))
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return estimate, math.nan, math.nan
    tail = 100 * (1 - level) / 2
    return estimate, float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def bootstrap_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray,
                      metrics: tuple[str, ...], scope: str = "pooled", n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Like ``bootstrap_ci`` for several metrics at once, from the same resamples (faster, and
    the intervals of different metrics describe the same replicates)."""
    labels, probs, groups = np.asarray(labels), np.asarray(probs), np.asarray(groups)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {metric: [] for metric in metrics}
    for _ in range(n_boot):
        index = _resample_index(groups, rng)
        if scope == "pooled":
            values = binary_metrics(labels[index], probs[index])
        else:
            values = grouped_metrics(labels[index], probs[index], groups[index]).get(scope, {})
        for metric in metrics:
            draws[metric].append(values.get(metric, math.nan))
    tail = 100 * (1 - level) / 2
    result = {}
    for metric, values in draws.items():
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        result[metric] = ((float(np.percentile(finite, tail)),
                           float(np.percentile(finite, 100 - tail)))
                          if len(finite) else (math.nan, math.nan))
    return result


def _paired_difference(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                       groups: np.ndarray, statistic: Statistic
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The inputs as arrays, and the observed difference ``statistic(a) - statistic(b)``."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    probs_a, probs_b = np.asarray(probs_a), np.asarray(probs_b)
    observed = statistic(labels, probs_a, groups) - statistic(labels, probs_b, groups)
    return labels, probs_a, probs_b, groups, observed


def paired_bootstrap(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                     groups: np.ndarray, statistic: Statistic, n_boot: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """Difference ``a - b`` with a 95% interval and a two-sided bootstrap p-value."""
    labels, probs_a, probs_b, groups, diff = _paired_difference(labels, probs_a, probs_b,
                                                                groups, statistic)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        index = _resample_index(groups, rng)
        diffs.append(statistic(labels[index], probs_a[index], groups[index])
                     - statistic(labels[index], probs_b[index], groups[index]))
    diffs = np.asarray(diffs, dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return {"diff": diff, "low": math.nan, "high": math.nan, "p": math.nan}
    # two-sided: how often the resampled difference falls on the other side of zero
    p = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))
    return {"diff": float(diff), "low": float(np.percentile(diffs, 2.5)),
            "high": float(np.percentile(diffs, 97.5)), "p": float(min(1.0, p))}


def paired_permutation(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                       groups: np.ndarray, statistic: Statistic, n_perm: int = 1000,
                       seed: int = 0) -> dict[str, float]:
    """Swap the two strategies' outputs per subject at random; p = share of |diff| >= observed."""
    labels, probs_a, probs_b, groups, observed = _paired_difference(labels, probs_a, probs_b,
                                                                    groups, statistic)
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(n_perm):
        swap = rng.random(len(labels)) < 0.5
        a = np.where(swap, probs_b, probs_a)
        b = np.where(swap, probs_a, probs_b)
        permuted = statistic(labels, a, groups) - statistic(labels, b, groups)
        if abs(permuted) >= abs(observed) - 1e-12:
            extreme += 1
    return {"diff": float(observed), "p": (extreme + 1) / (n_perm + 1)}


def across_seeds(values_a: np.ndarray, values_b: np.ndarray) -> dict[str, float]:
    """Paired tests over seeds (one summary metric per seed and strategy)."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError("across_seeds needs two equally long vectors of at least 2 seeds")
    diff = a - b
    result = {"mean_diff": float(diff.mean()), "n_seeds": float(len(a))}
    if np.allclose(diff, 0):
        result.update(t_p=1.0, wilcoxon_p=1.0)
        return result
    result["t_p"] = float(sps.ttest_rel(a, b).pvalue)
    result["wilcoxon_p"] = float(sps.wilcoxon(a, b).pvalue) if np.any(diff != 0) else 1.0
    return result
