"""Figures of notebooks 03 to 05: per-vendor metrics with CIs, learning curves,
communication cost, significance of differences, held-out vendor and ablations, and the
round times and metrics of one configuration run in-process and with Flower.

Vendors keep the kit's colours (x tick labels, curves); strategies get their own palette,
chosen not to collide with the vendor colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from duallora.plots.style import VENDORS, apply_style, vendor_color

STRATEGY_COLORS: dict[str, str] = {
    "single_site": "#999999",
    "centralized": "#222222",
    "fedavg_full": "#8C564B",
    "fedavg_lora": "#56B4E9",
    "ffa_lora": "#B8860B",
    "fedsa_lora": "#7F3C8D",
    "med_duallora": "#C0392B",
}
METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "sensitivity": "sensitivity",
                "specificity": "specificity", "auc": "ROC AUC"}


def strategy_color(name: str) -> str:
    """Colour of a strategy (variants like ``med_duallora_r8`` share their family's)."""
    for key in sorted(STRATEGY_COLORS, key=len, reverse=True):
        if name.startswith(key):
            return STRATEGY_COLORS[key]
    return "#777777"


def _scopes(table: pd.DataFrame) -> list[str]:
    present = set(table["scope"])
    return [v for v in VENDORS if v in present] + [s for s in ("macro", "pooled")
                                                   if s in present]


def _color_vendor_ticks(ax: plt.Axes) -> None:
    for tick in ax.get_xticklabels():
        tick.set_color(vendor_color(tick.get_text()) if tick.get_text() in VENDORS
                       else "#333333")


def plot_vendor_metrics(table: pd.DataFrame,
                        metrics: Sequence[str] = ("balanced_accuracy", "sensitivity",
                                                  "specificity"),
                        title: str = "Test metrics per vendor (95% bootstrap CI)"
                        ) -> plt.Figure:
    """One panel per metric; x: vendors then macro; one marker + CI bar per strategy."""
    apply_style()
    strategies = list(dict.fromkeys(table["strategy"]))
    scopes = [s for s in _scopes(table) if s != "pooled"]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 2.6 * len(metrics) + 0.6),
                             sharex=True, squeeze=False)
    width = 0.8 / max(len(strategies), 1)
    x = np.arange(len(scopes))
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        for i, name in enumerate(strategies):
            part = table[(table["strategy"] == name) & (table["metric"] == metric)]
            part = part.set_index("scope").reindex(scopes)
            pos = x - 0.4 + width * (i + 0.5)
            low = (part["value"] - part["ci_low"]).clip(lower=0).fillna(0)
            high = (part["ci_high"] - part["value"]).clip(lower=0).fillna(0)
            ax.errorbar(pos, part["value"], yerr=[low, high], fmt="o", ms=5, capsize=2,
                        color=strategy_color(name), label=name, lw=1.2)
        ax.axhline(0.5, color="#bbbbbb", lw=0.8, ls="--", zorder=0)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
        for boundary in x[:-1] + 0.5:
            ax.axvline(boundary, color="#eeeeee", lw=0.8, zorder=0)
    axes[-1, 0].set_xticks(x, scopes)
    axes[-1, 0].set_xlabel("test vendor (macro = mean over vendors)")
    _color_vendor_ticks(axes[-1, 0])
    axes[0, 0].legend(title="strategy", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0, 0].set_title(title)
    return fig


def plot_learning_curves(curves: pd.DataFrame, metric_name: str = "validation balanced "
                         "accuracy") -> plt.Figure:
    """One panel per strategy; one line per client (vendor colours; ``pooled`` grey)."""
    apply_style()
    strategies = list(dict.fromkeys(curves["strategy"]))
    n_cols = min(3, max(1, len(strategies)))
    n_rows = int(np.ceil(len(strategies) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 2.8 * n_rows + 0.4),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes.ravel(), strategies, strict=False):
        part = curves[curves["strategy"] == name]
        clients = [c for c in VENDORS if c in set(part["client"])] + \
            sorted(set(part["client"]) - set(VENDORS))
        for client in clients:
            line = part[part["client"] == client].sort_values("round")
            ax.plot(line["round"], line["value"], marker="o", ms=3, lw=1.5,
                    color=vendor_color(client), label=client)
        ax.set_title(name, color=strategy_color(name), fontsize=10)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("round")
        rounds = sorted(part["round"].unique())
        if rounds:
            ax.set_xticks(rounds if len(rounds) <= 10 else rounds[::max(1, len(rounds) // 8)])
    for ax in axes[:, 0]:
        ax.set_ylabel(metric_name)
    for ax in axes.ravel()[len(strategies):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), title="client", fontsize=8,
               loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle("Learning curves: each client's model on its validation split", fontsize=11)
    return fig


def plot_communication(costs: pd.DataFrame, per_round: pd.DataFrame) -> plt.Figure:
    """Left: bytes per round (up + down, all clients) over rounds; right: total per run."""
    apply_style()
    fig, (ax_round, ax_total) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, part in per_round.groupby("strategy", sort=False):
        series = part.groupby("round")["bytes"].sum()
        ax_round.plot(series.index, series.values / 1e6, marker="o", ms=3,
                      color=strategy_color(name), label=name)
    ax_round.set(xlabel="round", ylabel="MB per round (up + down, log scale)",
                 title="Communication per round")
    if not per_round.empty:
        ax_round.set_yscale("log")
        ax_round.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_round.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        ax_round.yaxis.set_minor_formatter(NullFormatter())
        rounds = sorted(per_round["round"].unique())
        ax_round.set_xticks(rounds if len(rounds) <= 12 else rounds[:: max(1, len(rounds) // 10)])
    if not per_round.empty:
        ax_round.legend(fontsize=8)
    order = costs.sort_values("bytes_total")
    bars = ax_total.barh(order["strategy"], order["bytes_total"] / 1e6,
                         color=[strategy_color(s) for s in order["strategy"]])
    labels = ["no server" if b == 0 else f"{b / 1e6:.2f} MB" for b in order["bytes_total"]]
    ax_total.bar_label(bars, labels=labels, fontsize=8, padding=2)
    ax_total.set(xlabel="MB sent in the whole run (up + down)", title="Total communication")
    ax_total.margins(x=0.25)
    return fig


def plot_significance(table: pd.DataFrame, metric_name: str = "balanced accuracy"
                      ) -> plt.Figure:
    """Forest plot: reference minus each baseline, per vendor and pooled, with paired 95% CI;
    a star marks p < 0.05 (paired bootstrap)."""
    apply_style()
    baselines = list(dict.fromkeys(table["baseline"]))
    scopes = [v for v in VENDORS if v in set(table["scope"])] + ["pooled"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(baselines) * len(scopes) / 2 + 2.2))
    y = 0.0
    ticks, labels = [], []
    for scope in scopes:
        for name in baselines:
            row = table[(table["scope"] == scope) & (table["baseline"] == name)]
            if row.empty:
                continue
            row = row.iloc[0]
            ax.errorbar(row["diff"], y, xerr=[[max(row["diff"] - row["ci_low"], 0)],
                                              [max(row["ci_high"] - row["diff"], 0)]],
                        fmt="o", ms=4, capsize=2, color=strategy_color(name))
            if row["p_bootstrap"] < 0.05:
                ax.text(row["ci_high"] + 0.02, y, "*", va="center", fontsize=11)
            ticks.append(y)
            labels.append(f"{scope}: vs {name}")
            y -= 1
        y -= 0.6
    ax.axvline(0, color="#555555", lw=1)
    ax.set_yticks(ticks, labels, fontsize=7)
    for tick in ax.get_yticklabels():
        scope = tick.get_text().split(":")[0]
        tick.set_color(vendor_color(scope) if scope in VENDORS else "#333333")
    reference = table["reference"].iloc[0] if len(table) else "reference"
    ax.set(xlabel=f"difference in {metric_name} ({reference} minus baseline)",
           title=f"{reference} against each baseline: paired bootstrap 95% CI (* p < 0.05)")
    return fig


def plot_metric_bars(table: pd.DataFrame, scope: str, metric: str = "balanced_accuracy",
                     title: str = "", order: Sequence[str] | None = None) -> plt.Figure:
    """Horizontal bars (one per run) of ``metric`` at ``scope`` with CI whiskers."""
    apply_style()
    part = table[(table["scope"] == scope) & (table["metric"] == metric)]
    if order is not None:
        part = part.set_index("strategy").reindex([o for o in order
                                                   if o in set(part["strategy"])]).reset_index()
    fig, ax = plt.subplots(figsize=(8, 0.5 * max(len(part), 1) + 1.4))
    y = np.arange(len(part))[::-1]
    low = (part["value"] - part["ci_low"]).clip(lower=0).fillna(0)
    high = (part["ci_high"] - part["value"]).clip(lower=0).fillna(0)
    ax.barh(y, part["value"], color=[strategy_color(s) for s in part["strategy"]], alpha=0.85)
    ax.errorbar(part["value"], y, xerr=[low, high], fmt="none", color="#333333", capsize=3)
    for yi, value in zip(y, part["value"], strict=True):
        ax.text(0.01, yi, f"{value:.3f}", va="center", ha="left", fontsize=8, color="white",
                fontweight="bold")
    ax.set_yticks(y, part["strategy"])
    ax.axvline(0.5, color="#bbbbbb", lw=0.8, ls="--")
    ax.set_xlim(0, 1.02)
    ax.set(xlabel=f"{METRIC_NAMES.get(metric, metric)} ({scope})", title=title)
    return fig


# -- one configuration, two transports (notebook 05) ---------------------------------------
def plot_round_times(table: pd.DataFrame) -> plt.Figure:
    """Seconds per round (``compare.round_times``), one bar group per round, one colour per run."""
    wide = table.pivot(index="round", columns="run", values="seconds")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    wide.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("seconds per round")
    ax.set_title("Round time: in-process loop vs Flower processes")
    fig.tight_layout()
    return fig


def plot_run_metric_bars(table: pd.DataFrame, title: str) -> plt.Figure:
    """One bar per run for each headline metric (``compare.test_metrics``)."""
    wide = table.pivot(index="metric", columns="run", values="value")
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    wide.plot.bar(ax=ax, rot=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test value (macro over vendors)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_privacy_tradeoff(points: pd.DataFrame, budgets: pd.DataFrame,
                          metric: str = "balanced accuracy") -> plt.Figure:
    """Left: each DP run's epsilon as the rounds add up. Right: the test metric against the
    run's total epsilon; runs without DP (no guarantee, epsilon infinite) sit at the right
    edge, marked "no DP" (``compare.privacy_tradeoff``)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for run, part in budgets.groupby("run", sort=False):
        left.plot(part["round"], part["epsilon"], marker="o", label=run)
    left.set_xlabel("round")
    left.set_ylabel("epsilon spent (total so far)")
    left.set_title("Privacy budget over the rounds")
    if not budgets.empty:
        left.legend(fontsize=7)
    finite = points[np.isfinite(points["epsilon"])]
    edge = (finite["epsilon"].max() * 1.5) if not finite.empty else 1.0
    for _, row in points.iterrows():
        x = row["epsilon"] if np.isfinite(row["epsilon"]) else edge
        right.scatter([x], [row["value"]], s=40, zorder=3)
        tag = row["run"] if np.isfinite(row["epsilon"]) else f"{row['run']} (no DP)"
        right.annotate(tag, (x, row["value"]), textcoords="offset points", xytext=(4, 4),
                       fontsize=7)
    right.axvline(edge, color="0.8", linestyle=":", zorder=1)
    right.set_xlabel("epsilon (total; dotted line: no DP, epsilon infinite)")
    right.set_ylabel(f"test {metric} (macro)")
    right.set_ylim(0, 1)
    right.set_title("Accuracy against privacy")
    fig.tight_layout()
    return fig
