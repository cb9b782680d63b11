"""The benchmark's two-level bootstrap: replicates, resampled subjects, vectorized metrics.

A ``Replicate`` is one ``(cohort_seed, train_seed)`` pair: the test labels, strata and every
arm's P(disease). Outer level: replicates drawn with replacement (cohort seeds first, then train
seeds within each drawn cohort); inner level: subjects drawn within strata (vendor x label),
the same resample for every train seed of a cohort and for both arms of a paired difference.
Metrics are computed from resample multiplicities (a weight matrix), so thousands of resamples
are a few matrix operations. The design and its caveats: ``duallora.results.inference``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from duallora.errors import KitError
from duallora.results.metrics import binary_metrics

METRICS = ("balanced_accuracy", "auc", "sensitivity", "specificity")
CALIBRATION = ("brier", "ece")  # lower is better; computed from the probabilities themselves
ALL_METRICS = (*METRICS, *CALIBRATION)
ECE_BINS = 10  # equal-width bins on [0, 1], the usual choice (Guo et al. 2017)
THRESHOLD = 0.5
MIN_WILCOXON = 6
MIN_HEADROOM = 0.005
_CHUNK_CELLS = 4_000_000  # weight-matrix cells per chunk (32 MB of float64)


# ----------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Replicate:
    """One (cohort_seed, train_seed) pair: test labels, strata and every arm's P(disease)."""

    labels: np.ndarray
    strata: np.ndarray
    probs: dict[str, np.ndarray]
    cohort_seed: int = 0
    train_seed: int = 0

    def __post_init__(self) -> None:
        where = f"replicate (cohort_seed={self.cohort_seed}, train_seed={self.train_seed})"
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise KitError(f"{where}: labels must be a non-empty 1-D array")
        if not np.isin(labels, (0, 1)).all():
            raise KitError(f"{where}: labels must be 0/1")
        strata = np.asarray(self.strata).astype(str)
        if strata.shape != labels.shape:
            raise KitError(f"{where}: {len(strata)} strata for {len(labels)} labels")
        if not self.probs:
            raise KitError(f"{where}: no arm has predictions")
        probs = {}
        for arm, values in self.probs.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape != labels.shape:
                raise KitError(f"{where}: arm {arm!r} has {values.size} predictions for "
                               f"{len(labels)} labels")
            if not np.isfinite(values).all():
                raise KitError(f"{where}: arm {arm!r} has non-finite predictions")
            probs[str(arm)] = values
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "strata", strata)
        object.__setattr__(self, "probs", probs)


# ------------------------------------------------------------------ vectorized metrics
def weighted_metric(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray, metric: str
                    ) -> np.ndarray:
    """``metric`` of every row of ``weights`` (k x n subject multiplicities of k resamples), with
    the semantics of ``binary_metrics`` (all-ones weights give exactly its value): NaN when
    undefined, balanced accuracy falls back to the one defined rate."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    labels, probs = np.asarray(labels).astype(bool), np.asarray(probs, dtype=np.float64)
    if metric == "auc":
        return _weighted_auc(np.ascontiguousarray(weights.T), labels, probs)
    if metric in CALIBRATION:
        return _weighted_calibration(weights, labels, probs, metric)
    return _weighted_rate(weights, labels, probs, metric)


def _weighted_calibration(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                          metric: str) -> np.ndarray:
    """Brier score (mean squared error of P(disease)) or expected calibration error (the
    subject-weighted mean over ``ECE_BINS`` equal-width bins of |observed rate - mean
    probability|) of the rows of the k x n ``weights``."""
    total = weights.sum(axis=1)
    residual = labels.astype(np.float64) - probs
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "brier":
            return np.where(total > 0, (weights @ residual ** 2) / total, np.nan)
        bins = np.minimum((probs * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        one_hot = np.zeros((len(probs), ECE_BINS))
        one_hot[np.arange(len(probs)), bins] = 1.0
        gaps = np.abs((weights * residual) @ one_hot).sum(axis=1)
        return np.where(total > 0, gaps / total, np.nan)


def _weighted_rate(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray, metric: str
                   ) -> np.ndarray:
    """Sensitivity, specificity or balanced accuracy of the rows of the k x n ``weights``: the
    four confusion counts of every resample are one matrix product."""
    preds = probs >= THRESHOLD
    columns = np.stack([labels & preds, labels, ~labels & ~preds, ~labels], axis=1)
    tp, pos, tn, neg = (weights @ columns.astype(np.float64)).T
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(pos > 0, tp / pos, np.nan)
        specificity = np.where(neg > 0, tn / neg, np.nan)
    if metric == "sensitivity":
        return sensitivity
    if metric == "specificity":
        return specificity
    if metric == "balanced_accuracy":
        both = 0.5 * (sensitivity + specificity)
        return np.where(np.isnan(sensitivity), specificity,
                        np.where(np.isnan(specificity), sensitivity, both))
    raise KitError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")


def _weighted_auc(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per column of the n x k ``weights`` (transposed, so that gathering
    subjects copies contiguous rows; ties count one half): for every positive, the weighted count
    of negatives below its score plus half of those tied with it, read off a running sum of the
    negatives' weights in score order (no pairwise matrix, no per-resample sort)."""
    negatives = np.flatnonzero(~labels)
    negatives = negatives[np.argsort(probs[negatives], kind="mergesort")]
    positives = np.flatnonzero(labels)
    neg_scores, pos_scores = probs[negatives], probs[positives]
    below = np.zeros((len(negatives) + 1, weights.shape[1]))
    np.cumsum(weights[negatives], axis=0, out=below[1:])
    left = np.searchsorted(neg_scores, pos_scores, side="left")
    right = np.searchsorted(neg_scores, pos_scores, side="right")
    credit = below[left]
    if np.any(left != right):  # ties between a positive and negatives count one half
        credit = 0.5 * (credit + below[right])
    w_pos = weights[positives]
    wins = np.einsum("ij,ij->j", w_pos, credit)
    n_pos, n_neg = w_pos.sum(axis=0), below[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)


# ----------------------------------------------------------------------- the bootstrap
@dataclass
class CohortData:
    """Replicates sharing one cohort seed (same subjects) and their stratum layout."""

    seed: int
    members: list[int]
    labels: np.ndarray
    order: np.ndarray  # a permutation grouping the subjects by stratum (resampling order)
    column_offset: np.ndarray  # in that order: where each subject's stratum starts
    column_size: np.ndarray  # and how many subjects it has


def check_replicates(reps: Sequence[Replicate], arms: Sequence[str], metric: str
                     ) -> list[CohortData]:
    if metric not in ALL_METRICS:
        raise KitError(f"unknown metric {metric!r}; choose from {', '.join(ALL_METRICS)}")
    reps = list(reps)
    if not reps:
        raise KitError("no replicates given")
    if not all(isinstance(rep, Replicate) for rep in reps):
        raise KitError("replicates must be duallora.results.inference.Replicate objects")
    keys = [(rep.cohort_seed, rep.train_seed) for rep in reps]
    if len(set(keys)) != len(keys):
        raise KitError("two replicates have the same (cohort_seed, train_seed)")
    for rep in reps:
        for arm in arms:
            if arm not in rep.probs:
                raise KitError(f"arm {arm!r} missing in replicate (cohort_seed="
                               f"{rep.cohort_seed}, train_seed={rep.train_seed}); it has "
                               f"{', '.join(sorted(rep.probs))}")
    cohorts: dict[int, list[int]] = {}
    for index, rep in enumerate(reps):
        cohorts.setdefault(rep.cohort_seed, []).append(index)
    result = []
    for seed, members in cohorts.items():
        first = reps[members[0]]
        for index in members[1:]:
            if (not np.array_equal(reps[index].labels, first.labels)
                    or not np.array_equal(reps[index].strata, first.strata)):
                raise KitError(f"replicates with cohort_seed={seed} have different test subjects "
                               "(labels or strata differ): give each test set its own cohort_seed")
        names, codes = np.unique(first.strata, return_inverse=True)
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=len(names))
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        grouped = codes[order]
        result.append(CohortData(seed, members, first.labels, order, starts[grouped],
                                 sizes[grouped]))
    return result


def design_of(reps: Sequence[Replicate], n_boot: int, seed: int) -> tuple:
    return (n_boot, seed, tuple((r.cohort_seed, r.train_seed, len(r.labels)) for r in reps))


def _subject_weights(cohort: CohortData, k: int, rng: np.random.Generator) -> np.ndarray:
    """k stratified resamples of the cohort's subjects, as a k x n multiplicity matrix over the
    subjects in ``cohort.order`` (grouped by stratum, so a draw is an offset plus a position)."""
    n = len(cohort.labels)
    drawn = (rng.random((k, n)) * cohort.column_size).astype(np.int64)
    drawn += cohort.column_offset
    drawn += (np.arange(k, dtype=np.int64) * n)[:, None]  # one block of n bins per resample
    return np.bincount(drawn.ravel(), minlength=k * n).reshape(k, n).astype(np.float64)


def bootstrap_parts(reps: Sequence[Replicate], cohorts: list[CohortData], arms: Sequence[str],
                    metric: str, n_boot: int, seed: int
                    ) -> list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Per cohort: ``(draw index of each instance, K x T train-seed multiplicities, {arm: K x T
    metric of every member replicate on the instance's subject resample})``.

    One *instance* is one drawn cohort inside one bootstrap draw; all random numbers come from
    ``seed`` and the structure only, never from the arms (common random numbers)."""
    if n_boot < 2:
        raise KitError(f"n_boot must be at least 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    n_cohorts = len(cohorts)
    if n_cohorts > 1:
        drawn = rng.integers(0, n_cohorts, size=(n_boot, n_cohorts))
    else:
        drawn = np.zeros((n_boot, 1), dtype=np.int64)
    draw_of = np.repeat(np.arange(n_boot), drawn.shape[1])
    drawn = drawn.ravel()
    result = []
    for c, cohort in enumerate(cohorts):
        instances = draw_of[drawn == c]
        k, t = len(instances), len(cohort.members)
        picks = rng.integers(0, t, size=(k, t)) + (np.arange(k) * t)[:, None]
        multiplicity = np.bincount(picks.ravel(), minlength=k * t).reshape(k, t)
        values = {arm: np.empty((k, t)) for arm in arms}
        labels = cohort.labels[cohort.order].astype(bool)
        probs = {(j, arm): reps[member].probs[arm][cohort.order]
                 for j, member in enumerate(cohort.members) for arm in arms}
        chunk = max(1, _CHUNK_CELLS // len(labels))
        for start in range(0, k, chunk):
            stop = min(k, start + chunk)
            weights = _subject_weights(cohort, stop - start, rng)
            if metric == "auc":
                weights = np.ascontiguousarray(weights.T)
            for (j, arm), scores in probs.items():
                values[arm][start:stop, j] = (
                    _weighted_auc(weights, labels, scores) if metric == "auc"
                    else _weighted_calibration(weights, labels, scores, metric)
                    if metric in CALIBRATION
                    else _weighted_rate(weights, labels, scores, metric))
        result.append((instances, multiplicity, values))
    return result


def combine_parts(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_boot: int,
                  n_reps: int) -> tuple[np.ndarray, float]:
    """Bootstrap distribution of the mean over drawn replicates (NaN-aware) and the test-sampling
    SE of the mean, from per-cohort ``(instances, multiplicities, values)``."""
    total = np.zeros(n_boot)
    count = np.zeros(n_boot)
    sampling_var = 0.0
    for instances, multiplicity, values in parts:
        finite = np.isfinite(values)
        total += np.bincount(instances, (multiplicity * np.where(finite, values, 0)).sum(1),
                             minlength=n_boot)
        count += np.bincount(instances, (multiplicity * finite).sum(1), minlength=n_boot)
        n_finite = finite.sum(axis=1)
        cohort_mean = np.where(finite, values, 0).sum(axis=1)[n_finite > 0] / n_finite[n_finite > 0]
        if len(cohort_mean) > 1:
            sampling_var += (values.shape[1] / n_reps) ** 2 * float(np.var(cohort_mean, ddof=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return draws, math.sqrt(sampling_var)


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float, float]:
    """``(low, high, sd)`` of the finite draws."""
    finite = draws[np.isfinite(draws)]
    if len(finite) < 2:
        return math.nan, math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), float(np.std(finite, ddof=1))


def check_level(level: float, name: str = "level") -> None:
    if not 0 < level < 1:
        raise KitError(f"{name} must be between 0 and 1, got {level}")


def per_replicate(reps: Sequence[Replicate], arm: str, metric: str) -> np.ndarray:
    if metric in CALIBRATION:
        return np.array([_weighted_calibration(np.ones((1, len(rep.labels))),
                                               rep.labels.astype(bool), rep.probs[arm],
                                               metric)[0] for rep in reps])
    return np.array([binary_metrics(rep.labels, rep.probs[arm], THRESHOLD)[metric]
                     for rep in reps], dtype=np.float64)


def finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def finite_sd(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def n_subjects(cohorts: list[CohortData]) -> int:
    return int(sum(len(cohort.labels) for cohort in cohorts))


def cohort_ids(reps: Sequence[Replicate]) -> list[int]:
    return [rep.cohort_seed for rep in reps]



def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p of ``diff = 0``: twice the smaller tail beyond 0, with the +1
    correction so that it is never exactly 0 (its floor is ``2 / (n_boot + 1)``)."""
    finite = draws[np.isfinite(draws)]
    if len(finite) == 0:
        return math.nan
    below = (np.sum(finite <= 0) + 1) / (len(finite) + 1)
    above = (np.sum(finite >= 0) + 1) / (len(finite) + 1)
    return float(min(1.0, 2 * min(below, above)))


def public_dict(result: Any) -> dict[str, Any]:
    return {name: (dict(value) if isinstance(value, dict) else value)
            for name, value in result.__dict__.items() if name not in ("draws", "design")}
