"""The headline numbers: one line per run (printed by ``train`` / ``flower-local``) and one row
per strategy (``reports/tables/headline.csv``, shown at the top of ``reports/README.md``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from duallora.results.run_reader import RunResults, load_run
from duallora.results.tables import cost_table, metric_table


def final_table(run_dir: Path, split: str = "test") -> pd.DataFrame:
    """One row per scope (vendors, pooled, macro), one column per metric (and CI bound)."""
    return _by_scope(load_run(run_dir), split)


def _by_scope(run: RunResults, split: str) -> pd.DataFrame:
    final = run.final_metrics(split)
    return final.pivot_table(index="client", columns="metric", values="value", sort=False)


def headline(run_dir: Path) -> str:
    """One line: strategy, pooled test balanced accuracy with its CI, bytes per round."""
    run = load_run(run_dir)
    table = _by_scope(run, "test")
    parts = [f"{run.config['strategy']}: run directory {run.path}"]
    if "pooled" in table.index:
        row = table.loc["pooled"]
        parts.append(f"pooled test balanced accuracy {row['balanced_accuracy']:.3f} "
                     f"[{row.get('balanced_accuracy_ci_low', float('nan')):.3f}, "
                     f"{row.get('balanced_accuracy_ci_high', float('nan')):.3f}]")
    cost = run.cost()
    if "bytes_up_per_round" in cost:
        parts.append(f"{cost['bytes_up_per_round'] + cost['bytes_down_per_round']:.0f} "
                     "bytes per round")
    return "; ".join(parts)


def failure_summary(run_dir: Path) -> str | None:
    """Why a finished run trained nothing, when every training attempt of every client failed
    (``None`` when at least one client trained once): such a run must not end with exit 0 and
    a headline that reads like a result."""
    run = load_run(run_dir)
    train = run.metrics[run.metrics["split"] == "train"]
    if (train["metric"] == "loss").any() or not (train["metric"] == "failed").any():
        return None
    failures = [event for event in run.events if event.get("event") == "failed"]
    first = failures[0].get("error", "unknown error") if failures else "unknown error"
    return (f"every client failed in every round ({len(failures)} failures); the first: "
            f"{first} (run directory {run.path}, events.json lists them all)")


def headline_table(runs: dict[str, RunResults], split: str = "test") -> pd.DataFrame:
    """One row per strategy: macro (mean over vendors) test balanced accuracy, sensitivity,
    specificity with 95% CIs, and the bytes it sent. The table ``reports/README.md`` shows."""
    table = metric_table(runs, split)
    costs = cost_table(runs).set_index("strategy")
    rows = []
    for name in runs:
        part = table[(table["strategy"] == name) & (table["scope"] == "macro")]
        if part.empty:
            continue
        row: dict[str, object] = {"strategy": name}
        for metric, short in (("balanced_accuracy", "bal_acc"), ("sensitivity", "sens"),
                              ("specificity", "spec")):
            hit = part[part["metric"] == metric]
            if len(hit):
                row[short] = float(hit["value"].iloc[0])
                row[f"{short}_ci"] = (f"[{hit['ci_low'].iloc[0]:.3f}, "
                                      f"{hit['ci_high'].iloc[0]:.3f}]")
        if name in costs.index:
            row["MB_sent"] = costs.loc[name, "bytes_total"] / 1e6
            row["trained_params"] = int(costs.loc[name, "trainable_params"])
        rows.append(row)
    return pd.DataFrame(rows)
