"""Compare finished runs: one results table, paired tests between strategies, tests over seeds,
and how far a Flower run is from the in-process run of the same configuration.

All inputs are run directories (``duallora train --out``, ``duallora flower-local --out``) read
through ``run_reader``; nothing is recomputed from models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file

from duallora.base.rundir import RunDir
from duallora.errors import KitError
from duallora.results.run_reader import RunResults, load_run, read_predictions
from duallora.results.stats import (
    across_seeds,
    metric_statistic,
    paired_bootstrap,
    paired_permutation,
)

HEADLINE = ("balanced_accuracy", "sensitivity", "specificity")
FLOWER_HEADLINE = ("balanced_accuracy", "specificity", "sensitivity", "auc")


def run_info(run: RunResults) -> dict:
    return {"strategy": run.config["strategy"], "seed": run.config["seed"],
            "rounds": run.config["rounds"],
            "wall_seconds": run.timing.get("total_seconds", float("nan"))}


def results_table(runs: Sequence[Path], split: str = "test",
                  metrics: Sequence[str] = HEADLINE) -> pd.DataFrame:
    """One row per (strategy, seed, scope): each metric with its 95% CI, bytes per round, time."""
    rows = []
    for path in runs:
        run = load_run(path)
        info = run_info(run)
        final = run.final_metrics(split)
        cost = run.cost()
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
    a = read_predictions(run_a).query("split == @split")
    b = read_predictions(run_b).query("split == @split")
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


# -- one configuration, two transports (notebook 05) ---------------------------------------
def compare_runs(flower_dir: Path, reference_dir: Path) -> pd.DataFrame:
    """How far a Flower run is from the in-process run: global adapter, metrics, predictions,
    communication log (0 and True mean identical)."""
    ours_run, ref_run = load_run(flower_dir), load_run(reference_dir)
    ours = load_file(str(RunDir(flower_dir).final / "global.safetensors"))
    ref = load_file(str(RunDir(reference_dir).final / "global.safetensors"))
    same_keys = sorted(ours) == sorted(ref)
    adapter_diff = max((float((ours[k].double() - ref[k].double()).abs().max()) for k in ref),
                       default=0.0) if same_keys else float("nan")
    m_ours, m_ref = ours_run.metrics, ref_run.metrics
    same_rows = m_ours.drop(columns="value").equals(m_ref.drop(columns="value"))
    metric_diff = float((m_ours["value"] - m_ref["value"]).abs().max()) if same_rows \
        else float("nan")
    p_ours, p_ref = ours_run.predictions, ref_run.predictions
    same_subjects = p_ours.drop(columns=["prob", "pred"]).equals(p_ref.drop(columns=["prob",
                                                                                     "pred"]))
    prob_diff = float((p_ours["prob"] - p_ref["prob"]).abs().max()) if same_subjects \
        else float("nan")
    comm_same = ours_run.comm.equals(ref_run.comm)
    return pd.DataFrame([
        {"what": "global adapter + head (max |difference|)", "value": adapter_diff,
         "same_structure": same_keys},
        {"what": "metrics.csv values (max |difference|)", "value": metric_diff,
         "same_structure": same_rows},
        {"what": "test probabilities (max |difference|)", "value": prob_diff,
         "same_structure": same_subjects},
        {"what": "comm.jsonl (messages, keys, bytes)", "value": 0.0 if comm_same else 1.0,
         "same_structure": comm_same},
    ])


def round_times(runs: Mapping[str, Path]) -> pd.DataFrame:
    """Seconds per round (and final evaluation) from each run's ``timing.json``."""
    rows = []
    for label, path in runs.items():
        timing = load_run(path).timing
        for round_idx, seconds in sorted(timing["rounds"].items(), key=lambda kv: int(kv[0])):
            rows.append({"run": label, "round": int(round_idx), "seconds": float(seconds)})
    return pd.DataFrame(rows, columns=["run", "round", "seconds"])


def test_metrics(runs: Mapping[str, Path], scope: str = "macro", split: str = "test"
                 ) -> pd.DataFrame:
    """Headline test metrics (``scope``: macro over vendors, or pooled) per run."""
    rows = []
    for label, path in runs.items():
        metrics = load_run(path).metrics
        part = metrics[(metrics.split == split) & (metrics.client == scope)
                       & metrics.metric.isin(FLOWER_HEADLINE)]
        for _, row in part.iterrows():
            rows.append({"run": label, "metric": row["metric"], "value": float(row["value"])})
    return pd.DataFrame(rows, columns=["run", "metric", "value"])


def run_epsilon(metrics: pd.DataFrame) -> pd.DataFrame:
    """A run's privacy rows (``metrics.csv``, split ``privacy``, written under the ServerApp's
    central DP, ``duallora.flower.server.privacy``) as ``round, epsilon_round, epsilon,
    delta``; empty when the run had no central DP."""
    rows = metrics[metrics["split"] == "privacy"]
    if rows.empty:
        return pd.DataFrame(columns=["round", "epsilon_round", "epsilon", "delta"])
    wide = rows.pivot_table(index="round", columns="metric", values="value").reset_index()
    return wide[["round", "epsilon_round", "epsilon", "delta"]]


def privacy_tradeoff(runs: Mapping[str, Path], metric: str = "balanced_accuracy",
                     scope: str = "macro") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy against privacy budget: ``(points, budgets)``.

    ``points``: one row per run (``run, epsilon, value``), ``epsilon`` the run's total
    (``inf`` for a run without central DP: no guarantee at all). ``budgets``: every DP run's
    epsilon after each round (``run, round, epsilon``), from its ``metrics.csv`` privacy rows
    (``duallora.flower.server.privacy``).
    """
    points, budgets = [], []
    for label, path in runs.items():
        metrics = load_run(path).metrics
        spent = run_epsilon(metrics)
        part = metrics[(metrics.split == "test") & (metrics.client == scope)
                       & (metrics.metric == metric)]
        if part.empty:
            raise KitError(f"{path}: no {scope} test {metric} in metrics.csv")
        total = float(spent["epsilon"].iloc[-1]) if not spent.empty else float("inf")
        points.append({"run": label, "epsilon": total, "value": float(part["value"].iloc[-1])})
        budgets += [{"run": label, "round": int(r), "epsilon": float(e)}
                    for r, e in zip(spent["round"], spent["epsilon"], strict=True)]
    return (pd.DataFrame(points, columns=["run", "epsilon", "value"]),
            pd.DataFrame(budgets, columns=["run", "round", "epsilon"]))
