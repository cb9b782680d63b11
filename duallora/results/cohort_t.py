"""Inference over cohort means, seed tests and power: what the design can resolve.

Replicates that share a cohort seed are not independent, so with two or more cohort seeds the
primary numbers are a one-sample t over cohort means (``cohort_t``: interval, p and the minimum
detectable difference, MDE). Beside it: the Wilcoxon signed-rank test over cohort means (only
from 6 of them), the number of independent replicates a t-test needs (``seeds_needed``), and
Holm's correction of a family of comparisons. See ``duallora.results.inference``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from duallora.errors import KitError
from duallora.results.bootstrap import check_level

MIN_WILCOXON = 6


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
    check_level(alpha, "alpha")
    check_level(power, "power")
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
