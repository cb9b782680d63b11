"""A decision threshold fixed on validation predictions, and the test metrics read at it.

Rule (docs/BENCHMARK.md, fixed before any benchmark result): the threshold is the **smallest
value among the validation probabilities (and +inf) at which the validation specificity is at
least 0.90**, a subject being called diseased when its probability is at least the threshold.
Specificity only grows with the threshold, so this is the threshold with the highest
validation sensitivity among those that keep 90% of the validation NOR subjects negative;
``+inf`` (nobody called diseased) is the fallback that always meets the target. The test
sensitivity and specificity are then read at that threshold: on new subjects the specificity
is only expected near 0.90, and how far it falls below is part of what is reported.

``binarize`` turns probabilities into 0/1 at the threshold, so the benchmark's interval
machinery (``duallora.results.inference``, which calls a subject diseased at P >= 0.5) gives
the test sensitivity and specificity at the validation threshold with the same design and
intervals as every other metric.
"""

from __future__ import annotations

import math

import numpy as np

from duallora.errors import KitError

TARGET_SPECIFICITY = 0.90
SUFFIX = "@val_spec90"  # the derived arm: an arm's predictions at its validation threshold


def threshold_at_specificity(labels: np.ndarray, probs: np.ndarray,
                             target: float = TARGET_SPECIFICITY) -> float:
    """The smallest validation probability (or +inf) whose validation specificity, the share
    of label-0 subjects with a probability below it, is at least ``target``."""
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape or labels.ndim != 1:
        raise KitError("threshold: labels and probabilities must be 1-D and aligned")
    if not 0 < target <= 1:
        raise KitError(f"threshold: target specificity must be in (0, 1], got {target}")
    negatives = np.sort(probs[labels == 0])
    if len(negatives) == 0:
        raise KitError("threshold: no validation subject with label 0 (NOR)")
    candidates = np.unique(np.append(probs, math.inf))
    below = np.searchsorted(negatives, candidates, side="left")  # negatives with p < t
    needed = math.ceil(target * len(negatives) - 1e-9)  # integers: no rounding at the edge
    return float(candidates[np.argmax(below >= needed)])


def binarize(probs: np.ndarray, threshold: float) -> np.ndarray:
    """1.0 where ``probs >= threshold``, else 0.0."""
    return (np.asarray(probs, dtype=np.float64) >= threshold).astype(np.float64)
