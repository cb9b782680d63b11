"""Compare finished runs: one results table, paired tests between strategies, tests over seeds.

All inputs are run directories (``duallora train --out``); nothing is recomputed from models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from duallora.stats import across_seeds, metric_statistic, paired_bootstrap, paired_permutation

HEADLINE = ("balanced_accuracy", "sensitivity", "specificity")


def run_info(run: Path) -> dict:
    config = json.loads((Path(run) / "config.json").read_text())
    timing_path = Path(run) / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    return {"strategy": config["strategy"], "seed": config["seed"], "rounds": config["rounds"],
            "wall_seconds": timing.get("total_seconds", float("nan"))}


def results_table(runs: Sequence[Path], split: str = "test",
                  metrics: Sequence[str] = HEADLINE) -> pd.DataFrame:
    """One row per (strategy, seed, scope): each metric with its 95% CI, bytes per round, time."""
    rows = []
    for run in runs:
        info = run_info(run)
        frame = pd.read_csv(Path(run) / "metrics.csv")
        final = frame[(frame["round"] == info["rounds"]) & (frame["split"] == split)]
        cost = frame[frame["split"] == "cost"].set_index("metric")["value"]
        per_round = float(cost.get("bytes_up_per_round", 0) + cost.get("bytes_down_per_round", 0))
        for scope, part in final.groupby("client", sort=False):
            values = part.set_index("metric")["value"]
            row = {**info, "scope": scope, "bytes_per_round": per_round,
                   "n": values.get("n", np.nan)}
            for metric in metrics:
                row[metric] = values.get(metric, np.nan)
                row[f"{metric}_ci_low"] = values.get(f"{metric}_ci_low", np.nan)
                row[f"{metric}_ci_high"] = values.get(f"{metric}_ci_high", np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def _aligned(run_a: Path, run_b: Path, split: str) -> pd.DataFrame:
    a = pd.read_csv(Path(run_a) / "predictions.csv").query("split == @split")
    b = pd.read_csv(Path(run_b) / "predictions.csv").query("split == @split")
    merged = a.merge(b, on=["subject_id", "client", "label"], suffixes=("_a", "_b"))
    if len(merged) != len(a) or len(merged) != len(b):
        raise ValueError(f"{run_a} and {run_b} were not tested on the same subjects")
    return merged


def paired_strategy_test(run_a: Path, run_b: Path, metric: str = "balanced_accuracy",
                         scope: str = "pooled", split: str = "test", n_boot: int = 1000,
                         seed: int = 0) -> dict[str, float]:
    """``a - b`` on the same test subjects: paired bootstrap CI/p and a permutation p."""
    merged = _aligned(run_a, run_b, split)
    labels = merged["label"].to_numpy()
    groups = merged["client"].astype(str).to_numpy()
    statistic = metric_statistic(metric, scope)
    boot = paired_bootstrap(labels, merged["prob_a"].to_numpy(), merged["prob_b"].to_numpy(),
                            groups, statistic, n_boot=n_boot, seed=seed)
    perm = paired_permutation(labels, merged["prob_a"].to_numpy(), merged["prob_b"].to_numpy(),
                              groups, statistic, n_perm=n_boot, seed=seed)
    return {**boot, "permutation_p": perm["p"]}


def seed_test(table: pd.DataFrame, strategy_a: str, strategy_b: str,
              metric: str = "balanced_accuracy", scope: str = "pooled") -> dict[str, float]:
    """Paired over seeds: the two strategies' per-seed ``metric`` at ``scope``."""
    part = table[table["scope"] == scope].pivot_table(index="seed", columns="strategy",
                                                      values=metric)
    part = part[[strategy_a, strategy_b]].dropna()
    return across_seeds(part[strategy_a].to_numpy(), part[strategy_b].to_numpy())
