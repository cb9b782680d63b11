"""Tables the notebooks show and save: cohort counts, model sizes, embedding projections.

Pure functions from data already computed (metadata, models, features) to ``DataFrame`` s or
arrays, so notebooks only call and display, and tests can check every number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from duallora.federated.config import LORA_TARGETS
from duallora.plots.style import LABEL_NAMES, VENDORS


def cohort_table(metadata: pd.DataFrame) -> pd.DataFrame:
    """Subjects per vendor (rows, kit order) and label x split (columns), with totals."""
    frame = metadata.assign(label_name=metadata["label"].map(LABEL_NAMES))
    table = pd.crosstab(frame["vendor"], [frame["label_name"], frame["split"]])
    order = [v for v in VENDORS if v in table.index] + \
        sorted(v for v in table.index if v not in VENDORS)
    columns = [(lab, split) for lab in ("NOR", "disease") for split in ("train", "val", "test")]
    table = table.reindex(index=order, columns=pd.MultiIndex.from_tuples(columns),
                          fill_value=0)
    table.columns = [f"{lab} {split}" for lab, split in table.columns]
    table["NOR"] = table[[c for c in table.columns if c.startswith("NOR ")]].sum(axis=1)
    table["disease"] = table[[c for c in table.columns if c.startswith("disease ")]].sum(axis=1)
    table["total"] = table["NOR"] + table["disease"]
    table.loc["all"] = table.sum(axis=0)
    table.index.name = "vendor"
    return table


def lora_parameter_count(model: torch.nn.Module, blocks: Sequence[int], rank: int,
                         targets: Sequence[str] = LORA_TARGETS) -> int:
    """Parameters of one LoRA adapter of ``rank`` on ``targets`` of ``blocks``:
    ``rank * (in + out)`` per adapted linear layer."""
    modules = dict(model.named_modules())
    total = 0
    for block in blocks:
        for target in targets:
            layer = modules[f"encoder.blocks.{block}.{target}"]
            total += rank * (layer.in_features + layer.out_features)
    return total


def parameter_table(sizes: Sequence[str] | None = None, rank: int = 4) -> pd.DataFrame:
    """One row per model size: shape, tokens, parameters, and what one LoRA adapter adds.

    Models are built on PyTorch's ``meta`` device (shapes only, no memory), so even ``huge``
    (637 M parameters) costs nothing to count.
    """
    from duallora.model import PRESETS, build_convvit
    from duallora.model.presets import TEST_SIZES

    rows = []
    for size in sizes or [s for s in PRESETS if s not in TEST_SIZES]:
        cfg = PRESETS[size]
        with torch.device("meta"):
            model = build_convvit(size)
        total = sum(p.numel() for p in model.parameters())
        per_block = sum(p.numel() for p in model.encoder.blocks[0].parameters())
        n_blocks = int(model.n_blocks)
        last2 = list(range(max(0, n_blocks - 2), n_blocks))
        lora_last2 = lora_parameter_count(model, last2, rank)
        lora_all = lora_parameter_count(model, range(n_blocks), rank)
        rows.append({
            "size": size, "embed_dim": cfg.embed_dim, "blocks": n_blocks,
            "heads": cfg.n_heads, "input": "x".join(map(str, cfg.image_size)),
            "tokens": int(np.prod(cfg.grid_size)), "params": int(total),
            "params_per_block": int(per_block),
            f"lora_r{rank}_last2": lora_last2, f"lora_r{rank}_all": lora_all,
            "lora_last2_pct": 100.0 * lora_last2 / total,
        })
    return pd.DataFrame(rows)


def project_embeddings(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2D projection of ``(N, d)`` features: ``pca`` or ``tsne`` (scikit-learn), standardised
    first so no single channel dominates."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    ).fit_transform(x)
    raise ValueError(f"unknown projection {method!r}; use 'pca' or 'tsne'")


def vendor_separability(features: np.ndarray, vendors: Sequence[str], seed: int = 0) -> float:
    """Cross-validated accuracy of a linear classifier predicting the vendor from features:
    near chance (1 / number of vendors) means no vendor shift, near 1 a strong one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(vendors)
    folds = int(min(5, np.unique(labels, return_counts=True)[1].min()))
    if folds < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, features, labels, cv=cv).mean())


# -- training results ------------------------------------------------------------------------
CI_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc")
SCOPES_LAST = ("pooled", "macro")


def _final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of the final summary (the last round that holds test-split metrics)."""
    summary = metrics[metrics["split"].isin(["test", "test_global", "holdout"])]
    return summary[summary["round"] == summary["round"].max()] if len(summary) else summary


def metric_table(runs: dict, split: str = "test",
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


def cost_table(runs: dict) -> pd.DataFrame:
    """Per strategy: trained / shared / private parameters and bytes per round and in total."""
    rows = []
    for name, run in runs.items():
        cost = run.metrics[(run.metrics["split"] == "cost")].set_index("metric")["value"]
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


def comm_per_round(runs: dict) -> pd.DataFrame:
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


def learning_curves(runs: dict, metric: str = "balanced_accuracy",
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


def headline_table(runs: dict, split: str = "test") -> pd.DataFrame:
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


def significance_table(runs: dict, reference: str, split: str = "test",
                       metric: str = "balanced_accuracy", n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """``reference`` against every other run on the same test subjects, per vendor and
    pooled: difference in ``metric`` with a paired-bootstrap 95% CI and p-value, and a paired
    permutation p-value."""
    from duallora.stats import metric_statistic, paired_bootstrap, paired_permutation

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
