"""Binary classification metrics for disease detection (label 1 = disease, 0 = NOR).

Written out in numpy (checked against scikit-learn in the tests) so that bootstrap loops stay fast
and every edge case is explicit: a metric that is undefined on the given subjects (e.g.
specificity with no NOR subject, AUC with one class) is NaN, never a silent 0.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc", "mcc", "f1", "accuracy")


def _safe_div(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def confusion(labels: np.ndarray, preds: np.ndarray) -> tuple[int, int, int, int]:
    """``(tp, fn, tn, fp)`` with disease as the positive class."""
    labels = np.asarray(labels).astype(bool)
    preds = np.asarray(preds).astype(bool)
    tp = int(np.sum(labels & preds))
    fn = int(np.sum(labels & ~preds))
    tn = int(np.sum(~labels & ~preds))
    fp = int(np.sum(~labels & preds))
    return tp, fn, tn, fp


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their positions (as scipy's rankdata)."""
    order = np.argsort(values, kind="mergesort")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5
                   ) -> dict[str, float]:
    """Every metric of ``METRICS`` plus ``n``, from labels and P(disease)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    preds = (probs >= threshold).astype(int)
    tp, fn, tn, fp = confusion(labels, preds)
    sensitivity = _safe_div(tp, tp + fn)
    specificity = _safe_div(tn, tn + fp)
    if math.isnan(sensitivity) or math.isnan(specificity):
        balanced = sensitivity if math.isnan(specificity) else specificity
    else:
        balanced = 0.5 * (sensitivity + specificity)
    denominator = math.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    mcc = (tp * tn - fp * fn) / denominator if denominator > 0 else 0.0
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return {"balanced_accuracy": balanced, "sensitivity": sensitivity,
            "specificity": specificity, "auc": roc_auc(labels, probs), "mcc": float(mcc),
            "f1": 0.0 if math.isnan(f1) else f1, "accuracy": _safe_div(tp + tn, len(labels)),
            "n": float(len(labels))}


def grouped_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray
                    ) -> dict[str, dict[str, float]]:
    """Metrics per group (vendor), ``pooled`` over every subject and ``macro`` (mean of groups)."""
    labels, probs, groups = np.asarray(labels), np.asarray(probs), np.asarray(groups)
    result = {str(g): binary_metrics(labels[groups == g], probs[groups == g])
              for g in sorted(set(groups.tolist()))}
    per_group = list(result.values())
    result["pooled"] = binary_metrics(labels, probs)
    result["macro"] = {m: float(np.nanmean([r[m] for r in per_group]))
                       if any(not math.isnan(r[m]) for r in per_group) else math.nan
                       for m in METRICS}
    result["macro"]["n"] = float(len(labels))
    return result
