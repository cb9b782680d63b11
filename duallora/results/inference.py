"""Inference for the benchmark: estimates, paired comparisons and tests that match its design.

Design
------
The benchmark compares training strategies ("arms") on a shared, balanced test cohort. Its unit
is the *replicate*: one ``(cohort_seed, train_seed)`` pair. Inside a replicate every arm has
predicted P(disease) for the same test subjects, so arms are compared *paired*. A cohort seed
fixes the subjects (replicates with the same cohort seed must have the same subjects, in the same
order: checked); a train seed fixes the training randomness. A number therefore varies for two
reasons, and this module reports both separately:

- **seed spread** (``seed_sd``): the sd over replicates of the per-replicate metric (or of the
  per-replicate paired difference): how much another training run would move it;
- **test-sampling error** (``sampling_se``): the standard error of the mean over replicates due to
  the finite test subjects alone, from resampling subjects within strata (vendor x label) with the
  trained models held fixed. With one replicate per cohort seed it is
  ``sqrt(mean_r var_r / n_reps)`` (``var_r`` the within-replicate bootstrap variance); replicates
  that share a cohort share subjects, so their sampling errors are correlated and are combined
  cohort by cohort (``sqrt(sum_c (T_c / n_reps)^2 var_c)``, ``var_c`` the bootstrap variance of
  the cohort's mean over its ``T_c`` replicates), which reduces to the same formula.

The interval of every number comes from a **two-level bootstrap**. Outer level: replicates drawn
with replacement (with several cohort seeds: cohort seeds first, then train seeds within each drawn
cohort). Inner level: within each drawn cohort, subjects drawn with replacement within strata; the
same subject resample serves every train seed of that cohort (they predicted the same subjects),
and -- for a paired difference -- both arms. The statistic of one bootstrap draw is the mean over
its drawn replicates; a replicate draw whose metric is undefined (AUC with one class) is ignored,
as in ``duallora.results.stats``. ``se`` is the sd of that bootstrap distribution and the interval
its percentiles. Two properties to know when reading it:

- with one cohort seed the interval is conditional on that cohort's training data (the outer level
  can only see train-seed spread); with several, the cohort resample already contains the test
  subjects' variation, so the inner level counts it a second time and the interval is somewhat
  conservative;
- with few replicates the outer bootstrap under-states seed spread by ``(n-1)/n`` and its
  percentile interval is too narrow (a bootstrap of 3 values is a poor interval): read it with the
  paired t over seeds, which is exact for normal seed effects.

Draws are generated from ``seed`` and the replicates' structure only (never from the arm), so
``estimate(reps, "a")``, ``estimate(reps, "b")`` and ``paired_difference(reps, "a", "b")`` called
with the same ``seed`` and ``n_boot`` see the same resamples (common random numbers): their stored
draws line up, which is what ``gap_recovered`` and ``headroom_fraction`` use for their intervals.

Inference over cohort means (the primary test)
----------------------------------------------
Replicates that share a cohort seed share its training subjects and its test subjects, so they
are not independent: ``full`` has 18 replicates from 3 cohorts, and a test that counts 18 would
claim a precision the design does not have. With two or more cohort seeds every primary number
is therefore computed over the **cohort means** (the mean over a cohort's train seeds of the
per-replicate value, or paired difference): the estimate is their mean, its interval and p a
one-sample t with ``cohorts - 1`` degrees of freedom, and the minimum detectable difference
``(t_{1-alpha/2, df} + t_{power, df}) * se`` comes from the same t. Cohort means are independent
and, being means over hundreds of test subjects, close to normal, so this is exact up to that
approximation; ``tests/test_inference.py`` checks its coverage and false-positive rate by
simulation at 3 and 5 cohorts. The two-level bootstrap stays beside it (``p_bootstrap``,
``boot_low``/``boot_high``): with few cohorts its outer level sees only a handful of values and
its nominal 95% interval covers about 75% when the between-cohort variance dominates, so it is
never the primary test when there is more than one cohort. With a single cohort seed there is no
between-cohort spread to estimate: the primary numbers are the bootstrap's, *conditional on that
cohort's training data*, and ``method`` says so.

Other tests
-----------
- a Wilcoxon signed-rank test over **cohort means**, only from 6 cohorts: with ``N`` values its
  smallest two-sided p is ``2 / 2^N`` (0.0625 for 5), so below 6 it can never reach p < 0.05.
  It is never computed over replicates that share a cohort (pseudo-replicates).
- For AUC also DeLong's test (``delong_paired``: the paired DeLong 1988 covariance computed with
  the O(n log n) midrank algorithm of Sun & Xu 2014). With one replicate it is the ordinary paired
  DeLong test. With several it is *combined*: the mean over replicates of the AUC difference, its
  variance from DeLong's covariance of all the cohort's AUCs (shared subjects) summed over cohort
  seeds (independent subjects). It is conditional on the trained models -- test sampling only, no
  seed spread -- so it answers "do these trained models differ on this population", not "does
  the strategy train better"; the primary test answers the latter.
- ``holm``: a family of comparisons (one primary comparator against each baseline) is corrected by
  Holm's step-down method on the primary ``p``: it controls the family-wise error rate like
  Bonferroni under any dependence between the tests, and is uniformly more powerful.
- ``tost``: equivalence (two one-sided tests) through the ``1 - 2 alpha`` interval of the primary
  method. It is only informative when both arms learned something: ``analysis`` runs it only
  when both beat the head-only probe, and otherwise reports why it did not.

Power
-----
``mde`` (minimum detectable difference) is the true difference that a two-sided level-``alpha``
test with this standard error detects with probability ``power``: ``(t_{1-alpha/2, df} +
t_{power, df}) * se`` over cohort means, ``(z_{1-alpha/2} + z_power) * se`` (2.80 se) for one
cohort. It is printed next to every unresolved result: an interval that includes 0 says "not
resolvable at this size", never "no difference". ``seeds_needed`` gives the independent
replicates (cohorts) a t-test needs to detect ``delta`` given their sd (noncentral t).

Metrics are those of ``duallora.results.metrics.binary_metrics`` (threshold 0.5, NaN when
undefined), computed here from resample *multiplicities* (a weight matrix) so that thousands of
resamples are a few matrix operations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from duallora.errors import KitError
from duallora.results.metrics import average_ranks, binary_metrics

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
        return _public_dict(self)


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
        return _public_dict(self)


@dataclass(frozen=True)
class Equivalence:
    """TOST of ``arm_a - arm_b`` against ``(-margin, +margin)``."""

    arm_a: str
    arm_b: str
    metric: str
    diff: float
    low90: float
    high90: float
    margin: float
    equivalent: bool
    p_tost: float
    alpha: float
    n_replicates: int

    def to_dict(self) -> dict[str, Any]:
        return _public_dict(self)


@dataclass(frozen=True)
class Share:
    """A ratio of differences (share of a gap or of the headroom), ``None`` with a reason when it
    would be meaningless; ``low``/``high`` from aligned bootstrap draws when available."""

    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _public_dict(result: Any) -> dict[str, Any]:
    return {name: (dict(value) if isinstance(value, dict) else value)
            for name, value in result.__dict__.items() if name not in ("draws", "design")}


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
class _Cohort:
    """Replicates sharing one cohort seed (same subjects) and their stratum layout."""

    seed: int
    members: list[int]
    labels: np.ndarray
    order: np.ndarray  # a permutation grouping the subjects by stratum (resampling order)
    column_offset: np.ndarray  # in that order: where each subject's stratum starts
    column_size: np.ndarray  # and how many subjects it has


def _check(reps: Sequence[Replicate], arms: Sequence[str], metric: str) -> list[_Cohort]:
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
        result.append(_Cohort(seed, members, first.labels, order, starts[grouped],
                              sizes[grouped]))
    return result


def _design(reps: Sequence[Replicate], n_boot: int, seed: int) -> tuple:
    return (n_boot, seed, tuple((r.cohort_seed, r.train_seed, len(r.labels)) for r in reps))


def _subject_weights(cohort: _Cohort, k: int, rng: np.random.Generator) -> np.ndarray:
    """k stratified resamples of the cohort's subjects, as a k x n multiplicity matrix over the
    subjects in ``cohort.order`` (grouped by stratum, so a draw is an offset plus a position)."""
    n = len(cohort.labels)
    drawn = (rng.random((k, n)) * cohort.column_size).astype(np.int64)
    drawn += cohort.column_offset
    drawn += (np.arange(k, dtype=np.int64) * n)[:, None]  # one block of n bins per resample
    return np.bincount(drawn.ravel(), minlength=k * n).reshape(k, n).astype(np.float64)


def _bootstrap(reps: Sequence[Replicate], cohorts: list[_Cohort], arms: Sequence[str],
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


def _combine(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_boot: int,
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


def _interval(draws: np.ndarray, level: float) -> tuple[float, float, float]:
    """``(low, high, sd)`` of the finite draws."""
    finite = draws[np.isfinite(draws)]
    if len(finite) < 2:
        return math.nan, math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), float(np.std(finite, ddof=1))


def _check_level(level: float, name: str = "level") -> None:
    if not 0 < level < 1:
        raise KitError(f"{name} must be between 0 and 1, got {level}")


def _per_replicate(reps: Sequence[Replicate], arm: str, metric: str) -> np.ndarray:
    if metric in CALIBRATION:
        return np.array([_weighted_calibration(np.ones((1, len(rep.labels))),
                                               rep.labels.astype(bool), rep.probs[arm],
                                               metric)[0] for rep in reps])
    return np.array([binary_metrics(rep.labels, rep.probs[arm], THRESHOLD)[metric]
                     for rep in reps], dtype=np.float64)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def _sd(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def _n_subjects(cohorts: list[_Cohort]) -> int:
    return int(sum(len(cohort.labels) for cohort in cohorts))


# ------------------------------------------------------------- inference over cohort means
@dataclass(frozen=True)
class CohortT:
    """A one-sample t over cohort means: the primary inference with two or more cohort seeds."""

    mean: float
    low: float
    high: float
    se: float
    p: float
    df: int
    mde: float
    n_cohorts: int


def cohort_means(values: np.ndarray, cohort_of: Sequence[int]) -> np.ndarray:
    """Mean of the finite ``values`` of each cohort (in first-seen order); cohorts with no finite
    value are left out (e.g. AUC undefined in every replicate of that cohort)."""
    values = np.asarray(values, dtype=np.float64)
    means = []
    for cohort in dict.fromkeys(cohort_of):
        mine = values[[c == cohort for c in cohort_of]]
        mine = mine[np.isfinite(mine)]
        if len(mine):
            means.append(float(mine.mean()))
    return np.asarray(means)


def cohort_t(means: np.ndarray, level: float = 0.95, alpha: float = 0.05,
             power: float = 0.8) -> CohortT | None:
    """t interval, two-sided p of ``mean = 0`` and MDE over independent cohort means (``None``
    below two cohorts). When every cohort has the same value the spread is 0: the interval is
    that value and p is 1 if it is 0, else 0 (no sampling variation to test against)."""
    means = np.asarray(means, dtype=np.float64)
    n = len(means)
    if n < 2:
        return None
    df = n - 1
    mean = float(means.mean())
    se = float(np.std(means, ddof=1) / math.sqrt(n))
    critical = float(sps.t.ppf(0.5 + level / 2, df))
    mde = float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)
    if se < 1e-15:
        return CohortT(mean, mean, mean, 0.0, 1.0 if abs(mean) < 1e-15 else 0.0, df, 0.0, n)
    p = float(2 * sps.t.sf(abs(mean) / se, df))
    return CohortT(mean, mean - critical * se, mean + critical * se, se, p, df, mde, n)


def _cohort_ids(reps: Sequence[Replicate]) -> list[int]:
    return [rep.cohort_seed for rep in reps]


def estimate(reps: Sequence[Replicate], arm: str, metric: str, *, n_boot: int = 2000,
             seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of ``arm``'s ``metric`` with its interval: a t over cohort means with two or more
    cohort seeds, else the two-level bootstrap conditional on the one cohort."""
    _check_level(level)
    reps = list(reps)
    cohorts = _check(reps, [arm], metric)
    per_rep = _per_replicate(reps, arm, metric)
    parts = [(instances, multiplicity, values[arm])
             for instances, multiplicity, values in _bootstrap(reps, cohorts, [arm], metric,
                                                               n_boot, seed)]
    draws, sampling_se = _combine(parts, n_boot, len(reps))
    boot_low, boot_high, boot_se = _interval(draws, level)
    common = dict(arm=arm, metric=metric, seed_sd=_sd(per_rep), sampling_se=sampling_se,
                  n_replicates=len(reps), n_cohorts=len(cohorts),
                  n_subjects=_n_subjects(cohorts), level=level, draws=draws,
                  design=_design(reps, n_boot, seed), boot_low=boot_low, boot_high=boot_high)
    clustered = cohort_t(cohort_means(per_rep, _cohort_ids(reps)), level)
    if clustered is not None:
        return Estimate(value=clustered.mean, low=clustered.low, high=clustered.high,
                        se=clustered.se, df=clustered.df,
                        method=f"t over {clustered.n_cohorts} cohort means "
                               f"({clustered.df} df)", **common)
    return Estimate(value=_mean(per_rep), low=boot_low, high=boot_high, se=boot_se,
                    method=CONDITIONAL, **common)


CONDITIONAL = ("two-level bootstrap, conditional on the one cohort seed's training data (no "
               "between-cohort spread can be estimated from one cohort)")


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p of ``diff = 0``: twice the smaller tail beyond 0, with the +1
    correction so that it is never exactly 0 (its floor is ``2 / (n_boot + 1)``)."""
    finite = draws[np.isfinite(draws)]
    if len(finite) == 0:
        return math.nan
    below = (np.sum(finite <= 0) + 1) / (len(finite) + 1)
    above = (np.sum(finite >= 0) + 1) / (len(finite) + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired_difference(reps: Sequence[Replicate], arm_a: str, arm_b: str, metric: str, *,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                      alpha: float = 0.05, power: float = 0.8) -> Comparison:
    """``arm_a - arm_b`` paired within replicates (the same subject resample for both arms).

    Primary (``p``, ``low``/``high``, ``mde``, ``resolvable``): a t over cohort means with two or
    more cohort seeds, else the two-level bootstrap conditional on the one cohort. Beside it: the
    bootstrap interval and p, a Wilcoxon test over cohort means (from 6 cohorts), the share of
    replicates won by ``a`` (descriptive) and, for AUC, DeLong."""
    _check_level(level)
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    if arm_a == arm_b:
        raise KitError(f"paired_difference needs two different arms, got {arm_a!r} twice")
    reps = list(reps)
    cohorts = _check(reps, [arm_a, arm_b], metric)
    per_a, per_b = _per_replicate(reps, arm_a, metric), _per_replicate(reps, arm_b, metric)
    diffs = per_a - per_b
    parts = [(instances, multiplicity, values[arm_a] - values[arm_b])
             for instances, multiplicity, values in _bootstrap(reps, cohorts, [arm_a, arm_b],
                                                               metric, n_boot, seed)]
    draws, sampling_se = _combine(parts, n_boot, len(reps))
    boot_low, boot_high, boot_se = _interval(draws, level)
    p_bootstrap = _bootstrap_p(draws)
    reasons: dict[str, str] = {}
    means = cohort_means(diffs, _cohort_ids(reps))
    clustered = cohort_t(means, level, alpha, power)
    if clustered is not None:
        diff, low, high, se = clustered.mean, clustered.low, clustered.high, clustered.se
        p, t_p, mde, df = clustered.p, clustered.p, clustered.mde, clustered.df
        method = f"t over {clustered.n_cohorts} cohort means ({df} df)"
    else:
        diff, low, high, se, p, t_p, df = _mean(diffs), boot_low, boot_high, boot_se, \
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
        seed_sd=_sd(diffs), sampling_se=sampling_se, p_bootstrap=p_bootstrap, t_p=t_p,
        wilcoxon_p=wilcoxon_p, share_a_wins=wins, mde=mde,
        resolvable=bool(low > 0 or high < 0), n_replicates=len(reps),
        n_cohorts=len(cohorts), n_subjects=_n_subjects(cohorts),
        value_a=_mean(cohort_means(per_a, _cohort_ids(reps))),
        value_b=_mean(cohort_means(per_b, _cohort_ids(reps))), level=level,
        alpha=alpha, power=power, delong_p=delong_p, reasons=reasons, draws=draws,
        design=_design(reps, n_boot, seed), p=p, df=df, method=method, boot_low=boot_low,
        boot_high=boot_high)


# --------------------------------------------------------------------------- seed tests
def wilcoxon_over_seeds(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of independent paired differences (cohort means, never
    replicates sharing a cohort); refused below 6 values, where even a difference of the same
    sign in every one gives p = 2 / 2^N >= 0.0625."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.ndim != 1 or not np.isfinite(diffs).all():
        raise KitError("wilcoxon_over_seeds needs a 1-D array of finite per-seed differences")
    n = len(diffs)
    if n < MIN_WILCOXON:
        floor = 2 / 2 ** n if n else 1.0
        raise KitError(f"a Wilcoxon signed-rank test over N={n} < {MIN_WILCOXON} seeds can never "
                       f"reach p < 0.05 (its smallest two-sided p is 2/2^{n} = {floor:.3f}); "
                       "use the paired t and the bootstrap interval, or run at least "
                       f"{MIN_WILCOXON} seeds")
    if np.all(diffs == 0):
        return 1.0
    return float(sps.wilcoxon(diffs).pvalue)


def seeds_needed(seed_sd: float, delta: float = 0.05, alpha: float = 0.05,
                 power: float = 0.8, max_n: int = 1000) -> int:
    """Smallest number of replicates for a two-sided paired t-test at ``alpha`` to detect a true
    mean difference ``delta`` with probability ``power``, when the per-replicate difference has sd
    ``seed_sd`` (measured by a pilot). Exact power from the noncentral t."""
    if not math.isfinite(seed_sd) or seed_sd < 0:
        raise KitError(f"seed_sd must be a finite sd >= 0, got {seed_sd}")
    if not delta > 0:
        raise KitError(f"delta must be > 0, got {delta}")
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    if seed_sd == 0:
        return 2
    n = np.arange(2, max_n + 1)
    df = n - 1
    critical = sps.t.ppf(1 - alpha / 2, df)
    shift = delta / seed_sd * np.sqrt(n)
    achieved = sps.nct.sf(critical, df, shift) + sps.nct.cdf(-critical, df, shift)
    enough = np.flatnonzero(achieved >= power)
    if len(enough) == 0:
        raise KitError(f"more than max_n={max_n} seeds needed to detect {delta} with seed sd "
                       f"{seed_sd} at power {power}")
    return int(n[enough[0]])


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-Bonferroni step-down adjusted p-values (monotone in the raw p, capped at 1), same keys
    and order; ``None`` (or NaN) is passed through and not counted in the family."""
    present = [(name, float(p)) for name, p in pvalues.items()
               if p is not None and not math.isnan(p)]
    for name, p in present:
        if not 0 <= p <= 1:
            raise KitError(f"p-value of {name!r} is {p}, not in [0, 1]")
    m = len(present)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, (name, p) in enumerate(sorted(present, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return {name: adjusted.get(name, p) for name, p in pvalues.items()}


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


def _combined_delong(reps: list[Replicate], cohorts: list[_Cohort], arm_a: str, arm_b: str
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


# ------------------------------------------------------------------------- equivalence
def tost(reps: Sequence[Replicate], arm_a: str, arm_b: str, metric: str, margin: float, *,
         n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> Equivalence:
    """Two one-sided tests of ``|a - b| < margin`` through the ``1 - 2 alpha`` interval of the
    primary method: equivalent when it lies inside ``(-margin, +margin)``. ``p_tost`` is the
    larger of the two one-sided p-values (from the t over cohort means, or with one cohort the
    share of bootstrap draws at or beyond each margin).

    Equivalence of two arms that learned nothing is trivially true; callers check first that
    both arms beat a reference (``duallora.benchmark.analysis`` uses the head-only probe)."""
    if not margin > 0:
        raise KitError(f"the equivalence margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise KitError(f"alpha must be between 0 and 0.5, got {alpha}")
    comparison = paired_difference(reps, arm_a, arm_b, metric, n_boot=n_boot, seed=seed,
                                   level=1 - 2 * alpha)
    if comparison.df is not None and comparison.se > 0:
        lower = float(sps.t.sf((comparison.diff + margin) / comparison.se, comparison.df))
        upper = float(sps.t.cdf((comparison.diff - margin) / comparison.se, comparison.df))
    elif comparison.df is not None:  # every cohort gave the same difference
        lower = upper = 0.0 if abs(comparison.diff) < margin else 1.0
    else:
        finite = comparison.draws[np.isfinite(comparison.draws)]
        lower = (np.sum(finite <= -margin) + 1) / (len(finite) + 1)
        upper = (np.sum(finite >= margin) + 1) / (len(finite) + 1)
    return Equivalence(arm_a=arm_a, arm_b=arm_b, metric=metric, diff=comparison.diff,
                       low90=comparison.low, high90=comparison.high, margin=margin,
                       equivalent=bool(-margin < comparison.low and comparison.high < margin),
                       p_tost=float(min(1.0, max(lower, upper))), alpha=alpha,
                       n_replicates=comparison.n_replicates)


# ------------------------------------------------------------------------ shares of gaps
def _aligned(*results: Estimate | Comparison) -> None:
    designs = {result.design for result in results}
    if len(designs) != 1:
        raise KitError("these results come from different replicates, n_boot or seed: compute "
                       "them from the same replicates with the same n_boot and seed")


def _ratio_interval(numerator: np.ndarray, denominator: np.ndarray, level: float
                    ) -> tuple[float | None, float | None]:
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = numerator / denominator
    low, high, _ = _interval(ratio, level)
    return (None if math.isnan(low) else low), (None if math.isnan(high) else high)


def headroom_fraction(diff: float | Comparison, headroom: float | Comparison,
                      level: float = 0.95) -> Share:
    """Share of the headroom (oracle - baseline) that a gain (method - baseline) closes.

    Plain numbers give the ratio alone; two ``Comparison`` objects from the same replicates,
    ``n_boot`` and ``seed`` also give a percentile interval from their aligned draws. ``None``
    with the reason when the headroom is at most 0.005 (a ratio of noise)."""
    gain = diff.diff if isinstance(diff, Comparison) else float(diff)
    room = headroom.diff if isinstance(headroom, Comparison) else float(headroom)
    if not math.isfinite(room) or room <= MIN_HEADROOM:
        return Share(None, reason=f"no headroom: the oracle is within {MIN_HEADROOM} of the "
                                  f"baseline (headroom {room:+.4f}), a share of it is noise")
    low = high = None
    if isinstance(diff, Comparison) and isinstance(headroom, Comparison):
        _aligned(diff, headroom)
        low, high = _ratio_interval(diff.draws, headroom.draws, level)
    return Share(gain / room, low, high)


def gap_recovered(two_blocks: Estimate, all_blocks: Estimate, head_only: Estimate) -> Share:
    """H2: share of the (all blocks - head only) gap that adapting two blocks recovers,
    ``(two - head) / (all - head)``, with an interval from the three estimates' aligned draws
    (compute them from the same replicates with the same ``n_boot`` and ``seed``).

    Only for a gap resolved above 0 (the bootstrap interval of all - head-only): when it
    includes 0 there is no gap to recover, and when it is below 0 the head-only probe beats
    all blocks, so a "share" would be a ratio of two negatives that reads as a recovery."""
    _aligned(two_blocks, all_blocks, head_only)
    if len({two_blocks.metric, all_blocks.metric, head_only.metric}) != 1:
        raise KitError("gap_recovered needs three estimates of the same metric")
    gap_draws = all_blocks.draws - head_only.draws
    low, high, _ = _interval(gap_draws, all_blocks.level)
    gap = all_blocks.value - head_only.value
    if high < 0:
        return Share(None, reason="uninformative: the head-only probe beats all blocks "
                                  f"(all - head-only {gap:+.3f} [{low:.3f}, {high:.3f}]); a "
                                  "share of a negative gap is meaningless")
    if not low > 0:
        return Share(None, reason="uninformative: head-only is as good as all blocks "
                                  f"(all - head-only {gap:+.3f} [{low:.3f}, {high:.3f}] "
                                  "includes 0)")
    share_low, share_high = _ratio_interval(two_blocks.draws - head_only.draws, gap_draws,
                                            all_blocks.level)
    value = (two_blocks.value - head_only.value) / gap
    return Share(float(value), share_low, share_high)


# --------------------------------------------------------------------------------- words
def _format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def describe(comparison: Comparison, *, metric: str | None = None) -> str:
    """One honest sentence: the difference, its interval and p when resolvable; otherwise the
    interval and the minimum detectable difference -- never "no difference"."""
    if metric is not None and metric != comparison.metric:
        raise KitError(f"describe: the comparison is of {comparison.metric!r}, not {metric!r}")
    head = (f"{comparison.arm_a} - {comparison.arm_b} ({comparison.metric}, "
            f"{comparison.n_replicates} replicates) = {comparison.diff:+.3f} "
            f"[{comparison.low:.3f}, {comparison.high:.3f}]")
    if comparison.resolvable:
        p = comparison.p if math.isfinite(comparison.p) else comparison.p_bootstrap
        return f"{head}, {_format_p(p)}"
    return (f"{head}: not resolvable at this size (minimum detectable difference "
            f"{comparison.mde:.3f})")
