"""Paired, stratified bootstrap of balanced-accuracy differences, vectorized.

The FM gate and the image-level headroom compare balanced accuracies (threshold 0.5) of several
probes scored on the *same* subjects. Their pre-registered intervals resample subjects within
strata (the label, or vendor x label), with the same resampled subjects for every probe
(paired). With the label inside every stratum, a replicate's balanced accuracy is a mean of
per-stratum hit rates, so the whole bootstrap is a few array operations on a (draws x subjects)
index matrix: 2000 resamples of 1000 subjects take milliseconds instead of the seconds that
2000 calls to sklearn's metric would.

``duallora.results.stats`` keeps the general (any-metric, slower) bootstrap of the results tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def hits(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """1.0 where ``probs > threshold`` agrees with ``labels``, else 0.0 (the BA convention of
    the kit's probe: disease when P(disease) > 0.5)."""
    return ((np.asarray(probs) > threshold) == (np.asarray(labels) == 1)).astype(np.float64)


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of the per-label hit rates (sklearn's balanced accuracy of ``probs > threshold``)."""
    labels = np.asarray(labels)
    correct = hits(labels, probs, threshold)
    return float(np.mean([correct[labels == value].mean() for value in np.unique(labels)]))


def stratum_rates(correct: Sequence[np.ndarray], strata: np.ndarray, n_boot: int = N_BOOT,
                  seed: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
    """Hit rates per stratum, observed and over paired bootstrap replicates.

    ``correct``: k hit vectors on the same n subjects; ``strata``: n stratum keys. Each replicate
    redraws, with replacement, as many subjects of each stratum as it holds (strata in sorted
    order, one generator seeded with ``seed``), and the same redraw serves all k vectors.
    Returns ``(keys, observed (k, s), replicates (k, s, n_boot))``.
    """
    strata = np.asarray(strata)
    matrix = np.stack([np.asarray(c, dtype=np.float64) for c in correct])
    keys, inverse = np.unique(strata, return_inverse=True)
    rng = np.random.default_rng(seed)
    observed = np.empty((len(matrix), len(keys)))
    replicates = np.empty((len(matrix), len(keys), n_boot))
    for j in range(len(keys)):
        members = np.flatnonzero(inverse == j)
        draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        observed[:, j] = matrix[:, members].mean(axis=1)
        replicates[:, j] = matrix[:, draws].mean(axis=2)
    return keys.tolist(), observed, replicates


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def paired_ba_difference(labels: np.ndarray, probs_a: np.ndarray,
                         probs_b: Sequence[np.ndarray], n_boot: int = N_BOOT,
                         seed: int = 0) -> dict[str, float]:
    """``BA(a) - mean_i BA(b_i)`` with its 95% paired bootstrap interval, stratified by label.

    ``probs_b`` holds one or more comparators (the FM gate's three random inits): in every
    replicate their mean BA is recomputed on the same resampled subjects as ``a``'s.
    """
    labels = np.asarray(labels)
    correct = [hits(labels, probs_a)] + [hits(labels, p) for p in probs_b]
    _, observed, replicates = stratum_rates(correct, labels, n_boot, seed)
    ba, ba_boot = observed.mean(axis=1), replicates.mean(axis=1)  # (k,), (k, n_boot)
    low, high = interval(ba_boot[0] - ba_boot[1:].mean(axis=0))
    return {"diff": float(ba[0] - ba[1:].mean()), "low": low, "high": high}
