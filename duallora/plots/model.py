"""Figures of notebook 02: model sizes, MAE reconstructions, embedding projections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from duallora.plots.data import mid_slice
from duallora.plots.style import LABEL_COLORS, LABEL_NAMES, VENDORS, apply_style, vendor_color


def plot_parameter_counts(table: pd.DataFrame, rank: int = 4) -> plt.Figure:
    """Parameters per model size (log scale): the whole ConvViT against one rank-``rank``
    LoRA adapter on the last two blocks and on all blocks."""
    apply_style()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(table))
    width = 0.27
    series = [("params", "full model", "#555555"),
              (f"lora_r{rank}_all", f"LoRA r={rank}, all blocks", "#56B4E9"),
              (f"lora_r{rank}_last2", f"LoRA r={rank}, last 2 blocks", "#D55E00")]
    for i, (column, label, colour) in enumerate(series):
        bars = ax.bar(x + (i - 1) * width, table[column], width, color=colour, label=label)
        ax.bar_label(bars, labels=[_short(v) for v in table[column]], fontsize=7, padding=1)
    ax.set_yscale("log")
    ax.set_xticks(x, table["size"])
    ax.set(xlabel="model size", ylabel="parameters (log scale)",
           title="What is trained: full ConvViT vs one LoRA adapter")
    ax.margins(y=0.2)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _short(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{int(value)}"


def plot_mae_loss(log: Sequence[Mapping[str, float]]) -> plt.Figure:
    apply_style()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], color="#555555", lw=1.2)
    ax.set(xlabel="optimisation step", ylabel="masked-patch MSE",
           title="MAE pretraining loss (short demo run)")
    return fig


def plot_mae_reconstructions(original: np.ndarray, masked: np.ndarray, recon: np.ndarray,
                             titles: Sequence[str], vendors: Sequence[str]) -> plt.Figure:
    """Rows: subjects; columns: ED frame, what the encoder sees (75% hidden), reconstruction.
    Arrays are ``(N, 1, H, W, D)`` in [0, 1]; the middle slice is shown."""
    apply_style()
    n = len(original)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n + 0.4), squeeze=False)
    columns = ("ED frame", "encoder input (75% hidden)", "MAE reconstruction")
    for row in range(n):
        for col, (volume, name) in enumerate(zip((original, masked, recon), columns,
                                                 strict=True)):
            ax = axes[row, col]
            ax.imshow(mid_slice(volume[row, 0]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if row == 0:
                ax.set_title(name, fontsize=9)
        axes[row, 0].set_ylabel(f"{vendors[row]}\n{titles[row]}", fontsize=8,
                                color=vendor_color(vendors[row]))
    return fig


def plot_embeddings(projections: Mapping[str, np.ndarray], vendors: Sequence[str],
                    labels: Sequence[int]) -> plt.Figure:
    """One row per projection (PCA, t-SNE): points coloured by vendor (left), by label
    (right). Clusters by vendor on the left are the shift the federation has to handle."""
    apply_style()
    vendors = np.asarray(vendors)
    labels = np.asarray(labels)
    fig, axes = plt.subplots(len(projections), 2, figsize=(10, 4.0 * len(projections)),
                             squeeze=False)
    present = [v for v in VENDORS if v in set(vendors)] + sorted(set(vendors) - set(VENDORS))
    for row, (method, coords) in enumerate(projections.items()):
        ax_v, ax_l = axes[row]
        for vendor in present:
            keep = vendors == vendor
            ax_v.scatter(coords[keep, 0], coords[keep, 1], s=22, alpha=0.8,
                         color=vendor_color(vendor), label=vendor, edgecolor="white", lw=0.4)
        for label in (0, 1):
            keep = labels == label
            ax_l.scatter(coords[keep, 0], coords[keep, 1], s=22, alpha=0.8,
                         color=LABEL_COLORS[label], label=LABEL_NAMES[label],
                         marker="o" if label == 0 else "^", edgecolor="white", lw=0.4)
        for ax, what in ((ax_v, "vendor"), (ax_l, "label")):
            ax.set(xlabel=f"{method} 1", ylabel=f"{method} 2",
                   title=f"Foundation-model features, {method}, coloured by {what}")
            ax.legend(title=what, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
