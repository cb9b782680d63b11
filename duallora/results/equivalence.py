"""Equivalence (TOST), shares of gaps and headroom, and comparisons in words.

``tost`` tests ``|a - b| < margin`` through the ``1 - 2 alpha`` interval of the primary method;
``headroom_fraction`` and ``gap_recovered`` are ratios of differences with intervals from aligned
bootstrap draws (``None`` with a reason when meaningless); ``describe`` says a comparison in
one line. See ``duallora.results.inference`` for the design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from duallora.errors import KitError
from duallora.results.bootstrap import (
    Replicate,
    percentile_interval,
    public_dict,
)
from duallora.results.paired import Comparison, Estimate, paired_difference

MIN_HEADROOM = 0.005


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
        return public_dict(self)


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
    low, high, _ = percentile_interval(ratio, level)
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
    low, high, _ = percentile_interval(gap_draws, all_blocks.level)
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
