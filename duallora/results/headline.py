"""Read a finished run directory back: headline numbers and tidy tables for notebooks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from duallora.federated.rundir import RunDir


def load_metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(RunDir(run_dir).metrics)


def final_table(run_dir: Path, split: str = "test") -> pd.DataFrame:
    """One row per scope (vendors, pooled, macro), one column per metric (and CI bound)."""
    metrics = load_metrics(run_dir)
    config = json.loads(RunDir(run_dir).config.read_text())
    final = metrics[(metrics["round"] == config["rounds"]) & (metrics["split"] == split)]
    return final.pivot_table(index="client", columns="metric", values="value", sort=False)


def headline(run_dir: Path) -> str:
    """One line: strategy, pooled test balanced accuracy with its CI, bytes per round."""
    rundir = RunDir(run_dir)
    config = json.loads(rundir.config.read_text())
    metrics = load_metrics(run_dir)
    table = final_table(run_dir)
    parts = [f"{config['strategy']}: run directory {rundir.root}"]
    if "pooled" in table.index:
        row = table.loc["pooled"]
        parts.append(f"pooled test balanced accuracy {row['balanced_accuracy']:.3f} "
                     f"[{row.get('balanced_accuracy_ci_low', float('nan')):.3f}, "
                     f"{row.get('balanced_accuracy_ci_high', float('nan')):.3f}]")
    cost = metrics[metrics["split"] == "cost"].set_index("metric")["value"]
    if "bytes_up_per_round" in cost:
        parts.append(f"{cost['bytes_up_per_round'] + cost['bytes_down_per_round']:.0f} "
                     "bytes per round")
    return "; ".join(parts)
