"""Figures of notebook 01: who is in the cohort, and what harmonization does to the images."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from duallora.plots.style import LABEL_NAMES, VENDORS, apply_style, vendor_color


def _vendor_order(values: Sequence[str]) -> list[str]:
    present = set(values)
    return [v for v in VENDORS if v in present] + sorted(present - set(VENDORS))


def plot_cohort_counts(metadata: pd.DataFrame) -> plt.Figure:
    """Subjects per vendor: NOR (hatched) and disease (solid) bars, and the federated split."""
    apply_style()
    vendors = _vendor_order(metadata["vendor"].unique())
    fig, (ax_label, ax_split) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(vendors))
    width = 0.38
    for offset, label in ((-width / 2, 0), (width / 2, 1)):
        counts = [int(((metadata["vendor"] == v) & (metadata["label"] == label)).sum())
                  for v in vendors]
        bars = ax_label.bar(x + offset, counts, width, color=[vendor_color(v) for v in vendors],
                            hatch="//" if label == 0 else None, edgecolor="white",
                            alpha=0.55 if label == 0 else 1.0)
        ax_label.bar_label(bars, fontsize=8, padding=1)
    ax_label.set_xticks(x, vendors)
    ax_label.set(xlabel="vendor (federated client)", ylabel="subjects",
                 title="Subjects per vendor and label")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor="#888888", alpha=0.55, hatch="//",
                             edgecolor="white"),
               plt.Rectangle((0, 0), 1, 1, facecolor="#888888")]
    ax_label.legend(handles, [LABEL_NAMES[0], LABEL_NAMES[1]], title="label", fontsize=8,
                    loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax_label.margins(y=0.15)

    bottom = np.zeros(len(vendors))
    shades = {"train": 1.0, "val": 0.6, "test": 0.3}
    for split, alpha in shades.items():
        counts = np.array([int(((metadata["vendor"] == v) & (metadata["split"] == split)).sum())
                           for v in vendors])
        ax_split.bar(x, counts, 0.6, bottom=bottom, color=[vendor_color(v) for v in vendors],
                     alpha=alpha, edgecolor="white", label=split)
        for xi, (b, c) in enumerate(zip(bottom, counts, strict=True)):
            if c:
                ax_split.text(xi, b + c / 2, str(c), ha="center", va="center", fontsize=8)
        bottom += counts
    ax_split.set_xticks(x, vendors)
    ax_split.set(xlabel="vendor (federated client)", ylabel="subjects",
                 title="Federated split (train / val / test)")
    split_handles = [plt.Rectangle((0, 0), 1, 1, facecolor="#555555", alpha=a)
                     for a in shades.values()]
    ax_split.legend(split_handles, list(shades), title="split", fontsize=8,
                    loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_intensity_distributions(samples: pd.DataFrame) -> plt.Figure:
    """Per-vendor intensity densities before (scanner units) and after harmonization ([0, 1]).

    ``samples``: rows ``vendor, stage (raw|harmonized), intensity`` (see
    ``duallora.notebooks.experiments.intensity_samples``).
    """
    apply_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    titles = {"raw": "Before: raw scanner intensities",
              "harmonized": "After: clipped and scaled to [0, 1]"}
    for ax, stage in zip(axes, ("raw", "harmonized"), strict=True):
        part = samples[samples["stage"] == stage]
        if part.empty:
            ax.text(0.5, 0.5, "no raw volumes available", ha="center", transform=ax.transAxes)
            ax.set_title(titles[stage])
            continue
        high = float(np.percentile(part["intensity"], 99.5)) or 1.0
        bins = np.linspace(0.0, high, 60)
        for vendor in _vendor_order(part["vendor"].unique()):
            values = part.loc[part["vendor"] == vendor, "intensity"].to_numpy()
            ax.hist(values, bins=bins, density=True, histtype="step", lw=1.8,
                    color=vendor_color(vendor), label=vendor)
        ax.set_yscale("log")
        unit = "intensity (scanner units)" if stage == "raw" else "intensity (scaled)"
        ax.set(xlabel=unit, ylabel="density (log)", title=titles[stage])
        ax.legend(title="vendor", fontsize=8)
    return fig


def mid_slice(volume: np.ndarray) -> np.ndarray:
    """The middle short-axis slice of an (H, W, D) volume, transposed for display."""
    return np.asarray(volume)[:, :, volume.shape[2] // 2].T


REAL_SAMPLES_SOURCE = ("CineMA's example volumes: github.com/mathpluscode/CineMA, "
                       "cinema/examples/data/ (one ACDC, M&Ms and M&Ms-2 subject)")


def plot_phantoms_vs_real(phantoms: Sequence[tuple[str, str, np.ndarray]],
                          real: Sequence[tuple[str, np.ndarray]]) -> plt.Figure:
    """Mid-ventricular ED slices: harmonized phantoms (top, framed in the vendor colour) and
    real preprocessed samples (bottom), on the same 192x192 mm grid and [0, 1] scale.

    ``phantoms``: ``(title, vendor, volume H x W x D)``; ``real``: ``(title, volume)``. With no
    real samples the bottom row says so and where they come from, so the figure is never
    silently half empty.
    """
    apply_style()
    n_cols = max(len(phantoms), len(real), 1)
    fig, axes = plt.subplots(2, n_cols, figsize=(2.4 * n_cols, 2.6 * 2 + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    for ax, (title, vendor, volume) in zip(axes[0], phantoms, strict=False):
        ax.imshow(mid_slice(volume), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9, color=vendor_color(vendor))
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color(vendor_color(vendor))
            spine.set_linewidth(3)
    axes[0, 0].set_ylabel("phantom", fontsize=10)
    for ax, (title, volume) in zip(axes[1], real, strict=False):
        ax.imshow(mid_slice(volume), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    axes[1, 0].set_ylabel("real sample", fontsize=10)
    if not real:
        axes[1, 0].text(0.02, 0.5, "No real samples found (../shared/data/real-samples is "
                        "absent).\n" + REAL_SAMPLES_SOURCE.replace(", cinema", ",\ncinema")
                        + "\nPut them in ../shared/data/real-samples/<dataset>/sax_ed.nii.gz",
                        transform=axes[1, 0].transAxes, ha="left", va="center", fontsize=9,
                        wrap=False)
    fig.suptitle("Harmonized phantoms (top) beside real preprocessed samples (bottom), "
                 "ED mid slice", fontsize=10)
    return fig
