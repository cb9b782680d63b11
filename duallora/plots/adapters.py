"""Figures of the adapter norms ``||s B A||_F`` (see ``duallora.results.adapter_norms``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from duallora.plots.style import VENDORS, apply_style, vendor_color
from duallora.results.adapter_norms import NORM_COLUMNS

MODULE_ORDER = ("attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2")
GLOBAL_COLOR = "#333333"


def _owners(norms: pd.DataFrame) -> list[str]:
    present = set(norms["owner"])
    return (["server"] if "server" in present else []) + \
        [v for v in VENDORS if v in present] + sorted(present - set(VENDORS) - {"server"})


def plot_norm_heatmaps(norms: pd.DataFrame, round_idx: int | None = None) -> plt.Figure:
    """Block x module heatmaps at one round: the global adapter, then each vendor's local one.
    One shared colour scale, so sizes compare across panels."""
    apply_style()
    norms = norms[list(NORM_COLUMNS)]
    round_idx = int(norms["round"].max()) if round_idx is None else round_idx
    part = norms[norms["round"] == round_idx]
    owners = _owners(part)
    blocks = sorted(part["block"].unique())
    modules = [m for m in MODULE_ORDER if m in set(part["module"])]
    vmax = float(part["norm"].max()) or 1.0
    fig, axes = plt.subplots(1, len(owners), figsize=(2.6 * len(owners) + 1.2,
                                                      0.5 * len(blocks) + 2.0), squeeze=False)
    image = None
    for ax, owner in zip(axes[0], owners, strict=True):
        grid = (part[part["owner"] == owner].pivot_table(index="block", columns="module",
                                                         values="norm", aggfunc="sum")
                .reindex(index=blocks, columns=modules))
        image = ax.imshow(grid.to_numpy(), cmap="magma", vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(modules)), modules, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks], fontsize=8)
        ax.grid(False)
        adapter = "global adapter" if owner == "server" else f"{owner}: local"
        ax.set_title(adapter, fontsize=9,
                     color=GLOBAL_COLOR if owner == "server" else vendor_color(owner))
    fig.colorbar(image, ax=axes[0].tolist(), label="||s B A||_F", shrink=0.9)
    fig.suptitle(f"Adapter norms per block and module (round {round_idx})", fontsize=11)
    return fig


def plot_norms_over_rounds(totals: pd.DataFrame) -> plt.Figure:
    """Total norm per round: the global adapter (black) and each vendor's local adapter."""
    apply_style()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for owner in _owners(totals):
        line = totals[totals["owner"] == owner].sort_values("round")
        label = "global (server)" if owner == "server" else f"{owner} local"
        ax.plot(line["round"], line["norm"], marker="o", ms=4, lw=2,
                color=GLOBAL_COLOR if owner == "server" else vendor_color(owner),
                ls="-" if owner == "server" else "--", label=label)
    ax.set(xlabel="round", ylabel="total ||s B A||_F over adapted layers",
           title="How far each adapter moves the frozen weights, round by round")
    rounds = sorted(totals["round"].unique())
    ax.set_xticks(rounds if len(rounds) <= 12 else rounds[:: max(1, len(rounds) // 10)])
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_local_share(norms: pd.DataFrame) -> plt.Figure:
    """Per vendor and adapted block at the last round: local norm / (local + global)."""
    apply_style()
    last = norms[norms["round"] == norms["round"].max()]
    glob = last[last["owner"] == "server"].groupby("block")["norm"].apply(
        lambda s: float(np.sqrt((s ** 2).sum())))
    vendors = [v for v in _owners(last) if v != "server"]
    blocks = sorted(last["block"].unique())
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / max(len(vendors), 1)
    for i, vendor in enumerate(vendors):
        local = last[last["owner"] == vendor].groupby("block")["norm"].apply(
            lambda s: float(np.sqrt((s ** 2).sum())))
        share = [local.get(b, 0.0) / (local.get(b, 0.0) + glob.get(b, 0.0) or 1.0)
                 for b in blocks]
        ax.bar(np.arange(len(blocks)) - 0.4 + width * (i + 0.5), share, width,
               color=vendor_color(vendor), label=vendor)
    ax.axhline(0.5, color="#bbbbbb", lw=0.8, ls="--")
    ax.set_xticks(range(len(blocks)), [f"block {b}" for b in blocks])
    ax.set_ylim(0, 1)
    ax.set(xlabel="adapted transformer block", ylabel="local / (local + global) norm",
           title="Share of the update that stays on site")
    ax.legend(title="vendor", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
