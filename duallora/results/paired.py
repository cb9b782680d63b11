"""Estimates and paired comparisons of the benchmark's arms, with every test of significance.

``estimate``: one arm's mean metric with its interval; ``paired_difference``: ``a - b`` paired
within replicates, with the primary test (a t over cohort means, or the bootstrap conditional on
one cohort), the bootstrap p, the Wilcoxon test over cohort means where it can resolve anything,
the MDE and, for AUC, DeLong's test. See ``duallora.results.inference`` for the design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from duallora.errors import KitError
from duallora.results.bootstrap import (
    CohortData,
    Replicate,
    bootstrap_p,
    bootstrap_parts,
    check_level,
    check_replicates,
    cohort_ids,
    combine_parts,
    design_of,
    finite_mean,
    finite_sd,
    n_subjects,
    per_replicate,
    percentile_interval,
    public_dict,
)
from duallora.results.cohort_t import MIN_WILCOXON, cohort_means, cohort_t, wilcoxon_over_seeds
from duallora.results.metrics import average_ranks


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Estimate:
    """Mean over replicates of one arm's metric, with its two-level bootstrap interval."""

    arm: str
    metric: str
    value: float
    low: float
    high: float
    se: float
    seed_sd: float
    sampling_se: float
    n_replicates: int
    n_cohorts: int
    n_subjects: int
    level: float
    draws: np.ndarray = field(repr=False, compare=False)
    design: tuple = field(repr=False, compare=False)
    df: int | None = None             # cohorts - 1 when the interval is a t over cohort means
    method: str = ""                  # how low/high were obtained (see the module docstring)
    boot_low: float = math.nan        # the two-level bootstrap interval, beside it
    boot_high: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready (without the bootstrap draws)."""
        return public_dict(self)


@dataclass(frozen=True)
class Comparison:
    """Paired difference ``arm_a - arm_b`` of one metric, with every test of its significance.

    ``diff``, ``low``, ``high``, ``se``, ``p``, ``mde`` and ``resolvable`` are the primary
    method's (``method``: a t over cohort means with ``df`` degrees of freedom, or the bootstrap
    conditional on one cohort); ``t_p`` is that t's p (``None`` for one cohort). ``reasons`` maps
    a field left ``None`` (``t_p``, ``wilcoxon_p``, ``delong_p``) to why; it also says how
    ``delong_p`` was obtained when several replicates were combined."""

    arm_a: str
    arm_b: str
    metric: str
    diff: float
    low: float
    high: float
    se: float
    seed_sd: float
    sampling_se: float
    p_bootstrap: float
    t_p: float | None
    wilcoxon_p: float | None
    share_a_wins: float
    mde: float
    resolvable: bool
    n_replicates: int
    n_cohorts: int
    n_subjects: int
    value_a: float
    value_b: float
    level: float
    alpha: float
    power: float
    delong_p: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    draws: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    design: tuple = field(default=(), repr=False, compare=False)
    p: float = math.nan               # the primary two-sided p (what Holm corrects)
    df: int | None = None
    method: str = ""
    boot_low: float = math.nan
    boot_high: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready (without the bootstrap draws)."""
        return public_dict(self)


def estimate(reps: Sequence[Replicate], arm: str, metric: str, *, n_boot: int = 2000,
             seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of ``arm``'s ``metric`` with its interval: a t over cohort means with two or more
    cohort seeds, else the two-level bootstrap conditional on the one cohort."""
    check_level(level)
    reps = list(reps)
    cohorts = check_replicates(reps, [arm], metric)
    per_rep = per_replicate(reps, arm, metric)
    parts = [(instances, multiplicity, values[arm])
             for instances, multiplicity, values in bootstrap_parts(reps, cohorts, [arm],
                                                                    metric, n_boot, seed)]
    draws, sampling_se = combine_parts(parts, n_boot, len(reps))
    boot_low, boot_high, boot_se = percentile_interval(draws, level)
    common = dict(arm=arm, metric=metric, seed_sd=finite_sd(per_rep), sampling_se=sampling_se,
                  n_replicates=len(reps), n_cohorts=len(cohorts),
                  n_subjects=n_subjects(cohorts), level=level, draws=draws,
                  design=design_of(reps, n_boot, seed), boot_low=boot_low, boot_high=boot_high)
    clustered = cohort_t(cohort_means(per_rep, cohort_ids(reps)), level)
    if clustered is not None:
        return Estimate(value=clustered.mean, low=clustered.low, high=clustered.high,
                        se=clustered.se, df=clustered.df,
                        method=f"t over {clustered.n_cohorts} cohort means "
                               f"({clustered.df} df)", **common)
    return Estimate(value=finite_mean(per_rep), low=boot_low, high=boot_high, se=boot_se,
                    method=CONDITIONAL, **common)


CONDITIONAL = ("two-level bootstrap, conditional on the one cohort seed's training data (no "
               "between-cohort spread can be estimated from one cohort)")


def paired_difference(reps: Sequence[Replicate], arm_a: str, arm_b: str, metric: str, *,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                      alpha: float = 0.05, power: float = 0.8) -> Comparison:
    """``arm_a - arm_b`` paired within replicates (the same subject resample for both arms).

    Primary (``p``, ``low``/``high``, ``mde``, ``resolvable``): a t over cohort means with two or
    more cohort seeds, else the two-level bootstrap conditional on the one cohort. Beside it: the
    bootstrap interval and p, a Wilcoxon test over cohort means (from 6 cohorts), the share of
    replicates won by ``a`` (descriptive) and, for AUC, DeLong."""
    check_level(level)
    check_level(alpha, "alpha")
    check_level(power, "power")
    if arm_a == arm_b:
        raise KitError(f"paired_difference needs two different arms, got {arm_a!r} twice")
    reps = list(reps)
    cohorts = check_replicates(reps, [arm_a, arm_b], metric)
    per_a, per_b = per_replicate(reps, arm_a, metric), per_replicate(reps, arm_b, metric)
    diffs = per_a - per_b
    parts = [(instances, multiplicity, values[arm_a] - values[arm_b])
             for instances, multiplicity, values in bootstrap_parts(
                 reps, cohorts, [arm_a, arm_b], metric, n_boot, seed)]
    draws, sampling_se = combine_parts(parts, n_boot, len(reps))
    boot_low, boot_high, boot_se = percentile_interval(draws, level)
    p_bootstrap = bootstrap_p(draws)
    reasons: dict[str, str] = {}
    means = cohort_means(diffs, cohort_ids(reps))
    clustered = cohort_t(means, level, alpha, power)
    if clustered is not None:
        diff, low, high, se = clustered.mean, clustered.low, clustered.high, clustered.se
        p, t_p, mde, df = clustered.p, clustered.p, clustered.mde, clustered.df
        method = f"t over {clustered.n_cohorts} cohort means ({df} df)"
    else:
        diff, low, high, se, p, t_p, df = finite_mean(diffs), boot_low, boot_high, boot_se, \
            p_bootstrap, None, None
        mde = float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * se)
        method = CONDITIONAL
        reasons["t_p"] = (f"needs >= 2 cohort seeds (have {len(means)}): replicates that share "
                          "a cohort are not independent")
    wilcoxon_p = None
    if len(means) < MIN_WILCOXON:
        reasons["wilcoxon_p"] = (f"needs >= {MIN_WILCOXON} cohort seeds (have {len(means)}): "
                                 "below that it can never reach p < 0.05, and replicates that "
                                 "share a cohort are not independent")
    else:
        wilcoxon_p = wilcoxon_over_seeds(means)
    delong_p = None
    if metric == "auc":
        delong_p, why = _combined_delong(reps, cohorts, arm_a, arm_b)
        reasons["delong_p"] = why
    finite_diffs = diffs[np.isfinite(diffs)]
    wins = float(np.mean((finite_diffs > 0) + 0.5 * (finite_diffs == 0))) \
        if len(finite_diffs) else math.nan
    return Comparison(
        arm_a=arm_a, arm_b=arm_b, metric=metric, diff=diff, low=low, high=high, se=se,
        seed_sd=finite_sd(diffs), sampling_se=sampling_se, p_bootstrap=p_bootstrap, t_p=t_p,
        wilcoxon_p=wilcoxon_p, share_a_wins=wins, mde=mde,
        resolvable=bool(low > 0 or high < 0), n_replicates=len(reps),
        n_cohorts=len(cohorts), n_subjects=n_subjects(cohorts),
        value_a=finite_mean(cohort_means(per_a, cohort_ids(reps))),
        value_b=finite_mean(cohort_means(per_b, cohort_ids(reps))), level=level,
        alpha=alpha, power=power, delong_p=delong_p, reasons=reasons, draws=draws,
        design=design_of(reps, n_boot, seed), p=p, df=df, method=method, boot_low=boot_low,
        boot_high=boot_high)


# ----------------------------------------------------------------------------- DeLong
def _delong_components(labels: np.ndarray, scores: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs of the k rows of ``scores`` and DeLong's structural components (Sun & Xu 2014 midrank
    version): ``v10`` (k x m, positives) and ``v01`` (k x n, negatives)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = int(labels.sum()), int((~labels).sum())
    if m == 0 or n == 0:
        raise KitError("DeLong needs both classes among the test subjects")
    v10 = np.empty((len(scores), m))
    v01 = np.empty((len(scores), n))
    aucs = np.empty(len(scores))
    for row, values in enumerate(scores):
        pos, neg = values[labels], values[~labels]
        rank_all = average_ranks(values)
        v10[row] = (rank_all[labels] - average_ranks(pos)) / n
        v01[row] = 1.0 - (rank_all[~labels] - average_ranks(neg)) / m
        aucs[row] = v10[row].mean()
    return aucs, v10, v01


def _delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    aucs, v10, v01 = _delong_components(labels, scores)
    cov = np.atleast_2d(np.cov(v10)) / v10.shape[1] + np.atleast_2d(np.cov(v01)) / v01.shape[1]
    return aucs, cov


def _z_test(diff: float, variance: float) -> tuple[float, float, float]:
    se = math.sqrt(max(variance, 0.0))
    if se < 1e-15:
        return se, (0.0 if abs(diff) < 1e-15 else math.copysign(math.inf, diff)), \
            (1.0 if abs(diff) < 1e-15 else 0.0)
    z = diff / se
    return se, z, float(2 * sps.norm.sf(abs(z)))


def delong_paired(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray
                  ) -> dict[str, float]:
    """DeLong's test of two correlated AUCs on the same subjects: ``auc_a, auc_b, diff, se, z, p``
    (two-sided). The variance of ``auc_a - auc_b`` uses DeLong's 1988 paired covariance."""
    labels = np.asarray(labels)
    probs_a, probs_b = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    if not probs_a.shape == probs_b.shape == labels.shape:
        raise KitError("delong_paired needs labels and both arms' probabilities of equal length")
    aucs, cov = _delong_covariance(labels, np.stack([probs_a, probs_b]))
    diff = float(aucs[0] - aucs[1])
    se, z, p = _z_test(diff, cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "se": se,
            "z": float(z), "p": p}


def _combined_delong(reps: list[Replicate], cohorts: list[CohortData], arm_a: str, arm_b: str
                     ) -> tuple[float | None, str]:
    """DeLong for the mean AUC difference over replicates (see the module docstring)."""
    n_reps = len(reps)
    diff, variance = 0.0, 0.0
    for cohort in cohorts:
        labels = cohort.labels
        if labels.min() == labels.max():
            return None, f"cohort_seed={cohort.seed} has one class: AUC undefined"
        scores = np.stack([reps[i].probs[arm] for i in cohort.members for arm in (arm_a, arm_b)])
        aucs, cov = _delong_covariance(labels, scores)
        contrast = np.tile([1.0, -1.0], len(cohort.members)) / n_reps
        diff += float(contrast @ aucs)
        variance += float(contrast @ cov @ contrast)
    _, _, p = _z_test(diff, variance)
    if n_reps == 1:
        return p, "paired DeLong test on the one replicate"
    return p, (f"combined DeLong over {n_reps} replicates: the mean AUC difference with the "
               "test-sampling covariance only (trained models held fixed, no seed spread)")
