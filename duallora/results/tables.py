"""Tables of finished runs for the notebooks: final metrics with CIs, costs, bytes per round,
learning curves, paired significance against a reference strategy, adapter-norm totals.

Every function takes ``{name: RunResults}`` (``run_reader.load_runs``) and returns a tidy
``DataFrame``; nothing is recomputed from models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from data_prep.conventions import VENDORS
from duallora.results.run_reader import RunResults

CI_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc")
SCOPES_LAST = ("pooled", "macro")


def _final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of the final summary (the last round that holds test-split metrics)."""
    summary = metrics[metrics["split"].isin(["test", "test_global", "holdout"])]
    return summary[summary["round"] == summary["round"].max()] if len(summary) else summary


def metric_table(runs: dict[str, RunResults], split: str = "test",
                 metrics: Sequence[str] = CI_METRICS) -> pd.DataFrame:
    """Long table ``strategy, scope, metric, value, ci_low, ci_high, n`` of each run's final
    ``split`` metrics; ``scope`` is a vendor, ``pooled`` or ``macro``."""
    rows = []
    for name, run in runs.items():
        final = _final_rows(run.metrics)
        part = final[final["split"] == split]
        if part.empty:
            continue
        values = part.set_index(["client", "metric"])["value"]
        for scope in part["client"].unique():
            n = values.get((scope, "n"), np.nan)
            for metric in metrics:
                if (scope, metric) not in values.index:
                    continue
                rows.append({"strategy": name, "scope": scope, "metric": metric,
                             "value": values[(scope, metric)],
                             "ci_low": values.get((scope, f"{metric}_ci_low"), np.nan),
                             "ci_high": values.get((scope, f"{metric}_ci_high"), np.nan),
                             "n": n})
    return pd.DataFrame(rows, columns=["strategy", "scope", "metric", "value", "ci_low",
                                       "ci_high", "n"])


def wide_metric_table(table: pd.DataFrame) -> pd.DataFrame:
    """``metric_table`` as strategy x scope rows with ``metric [low, high]`` columns."""
    if table.empty:
        return table
    frame = table.copy()
    frame["cell"] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{v:.3f}"
                     for v, lo, hi in zip(frame["value"], frame["ci_low"], frame["ci_high"],
                                          strict=True)]
    wide = frame.pivot_table(index=["strategy", "scope"], columns="metric", values="cell",
                             aggfunc="first", sort=False)
    columns = [m for m in CI_METRICS if m in wide.columns]
    wide = wide[columns + [c for c in wide.columns if c not in columns]].reset_index()
    wide.columns.name = None
    return wide


def cost_table(runs: dict[str, RunResults]) -> pd.DataFrame:
    """Per strategy: trained / shared / private parameters and bytes per round and in total."""
    rows = []
    for name, run in runs.items():
        cost = run.cost()
        up = float(cost.get("bytes_up_total", 0.0))
        down = float(cost.get("bytes_down_total", 0.0))
        rounds = int(run.config.get("rounds", 1))
        rows.append({"strategy": name, "trainable_params": int(cost.get("trainable_params", 0)),
                     "shared_params": int(cost.get("shared_params", 0)),
                     "private_params": int(cost.get("private_params", 0)),
                     "rounds": rounds, "bytes_per_round": (up + down) / max(rounds, 1),
                     "bytes_up_total": up, "bytes_down_total": down,
                     "bytes_total": up + down})
    return pd.DataFrame(rows)


def comm_per_round(runs: dict[str, RunResults]) -> pd.DataFrame:
    """Bytes sent per round and direction (summed over clients), from each ``comm.jsonl``."""
    parts = []
    for name, run in runs.items():
        if run.comm.empty:
            continue
        grouped = run.comm.groupby(["round", "direction"])["bytes"].sum().reset_index()
        parts.append(grouped.assign(strategy=name))
    if not parts:
        return pd.DataFrame(columns=["strategy", "round", "direction", "bytes"])
    return pd.concat(parts, ignore_index=True)[["strategy", "round", "direction", "bytes"]]


def learning_curves(runs: dict[str, RunResults], metric: str = "balanced_accuracy",
                    split: str = "val") -> pd.DataFrame:
    """Per-round validation ``metric`` per client: ``strategy, round, client, value``."""
    parts = []
    for name, run in runs.items():
        m = run.metrics
        part = m[(m["split"] == split) & (m["metric"] == metric)]
        parts.append(part[["round", "client", "value"]].assign(strategy=name))
    if not parts:
        return pd.DataFrame(columns=["strategy", "round", "client", "value"])
    return pd.concat(parts, ignore_index=True)[["strategy", "round", "client", "value"]]


def significance_table(runs: dict[str, RunResults], reference: str, split: str = "test",
                       metric: str = "balanced_accuracy", n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """``reference`` against every other run on the same test subjects, per vendor and
    pooled: difference in ``metric`` with a paired-bootstrap 95% CI and p-value, and a paired
    permutation p-value."""
    from duallora.results.stats import metric_statistic, paired_bootstrap, paired_permutation

    ref = runs[reference].predictions
    ref = ref[ref["split"] == split]
    rows = []
    for name, run in runs.items():
        if name == reference:
            continue
        other = run.predictions[run.predictions["split"] == split]
        joined = ref.merge(other, on=["subject_id", "client", "label"],
                           suffixes=("_ref", "_other"))
        if joined.empty:
            continue
        scopes = [v for v in VENDORS if v in set(joined["client"])] + ["pooled"]
        for scope in scopes:
            part = joined if scope == "pooled" else joined[joined["client"] == scope]
            args = (part["label"].to_numpy(), part["prob_ref"].to_numpy(),
                    part["prob_other"].to_numpy(), part["client"].to_numpy())
            statistic = metric_statistic(metric, "pooled")
            boot = paired_bootstrap(*args, statistic, n_boot=n_boot, seed=seed)
            perm = paired_permutation(*args, statistic, n_perm=n_boot, seed=seed)
            rows.append({"reference": reference, "baseline": name, "scope": scope,
                         "metric": metric, "n": len(part), "diff": boot["diff"],
                         "ci_low": boot["low"], "ci_high": boot["high"],
                         "p_bootstrap": boot["p"], "p_permutation": perm.get("p", np.nan)})
    return pd.DataFrame(rows)


def norm_totals(norms: pd.DataFrame) -> pd.DataFrame:
    """Total adapter norm per round and owner (root of the summed squared module norms)."""
    if norms.empty:
        return norms
    squared = norms.assign(sq=norms["norm"] ** 2)
    total = squared.groupby(["round", "owner", "adapter"])["sq"].sum().reset_index()
    total["norm"] = np.sqrt(total.pop("sq"))
    return total
