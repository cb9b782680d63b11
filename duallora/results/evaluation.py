"""Turn final predictions into the metric rows of ``metrics.csv`` (with bootstrap 95% CIs)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from duallora.results.metrics import METRICS, grouped_metrics
from duallora.results.stats import bootstrap_metrics

CI_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc")


def prediction_rows(subject_ids: list[str], client: str, split: str, labels: np.ndarray,
                    probs: np.ndarray) -> list[dict[str, Any]]:
    return [{"subject_id": sid, "client": client, "split": split, "label": int(label),
             "prob": float(prob), "pred": int(prob >= 0.5)}
            for sid, label, prob in zip(subject_ids, labels, probs, strict=True)]


def summary_rows(predictions: pd.DataFrame, round_idx: int, n_boot: int, seed: int
                 ) -> list[dict[str, Any]]:
    """Per split: every metric per vendor, ``pooled`` and ``macro``, plus CI bounds for the
    headline metrics (``<metric>_ci_low`` / ``<metric>_ci_high``)."""
    rows: list[dict[str, Any]] = []
    for split, part in predictions.groupby("split", sort=True):
        labels = part["label"].to_numpy()
        probs = part["prob"].to_numpy()
        groups = part["client"].astype(str).to_numpy()
        values = grouped_metrics(labels, probs, groups)
        for scope, metrics in values.items():
            for metric in (*METRICS, "n"):
                rows.append(_row(round_idx, scope, split, metric, metrics[metric]))
            if n_boot <= 0:
                continue
            # a vendor's interval only needs that vendor's subjects
            keep = groups == scope if scope not in ("pooled", "macro") else slice(None)
            intervals = bootstrap_metrics(labels[keep], probs[keep], groups[keep], CI_METRICS,
                                          scope="macro" if scope == "macro" else "pooled",
                                          n_boot=n_boot, seed=seed)
            for metric, (low, high) in intervals.items():
                rows.append(_row(round_idx, scope, split, f"{metric}_ci_low", low))
                rows.append(_row(round_idx, scope, split, f"{metric}_ci_high", high))
    return rows


def _row(round_idx: int, client: str, split: str, metric: str, value: float) -> dict[str, Any]:
    return {"round": round_idx, "client": client, "split": split, "metric": metric,
            "value": float(value) if value is not None else math.nan}
