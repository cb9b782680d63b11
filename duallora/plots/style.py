"""Consistent colours, fonts and figure saving for every figure the kit produces."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use(matplotlib.get_backend() or "Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The four federated clients, in the order tables and legends list them (declared once, in
# data_prep.conventions; re-exported here for the figures)
from data_prep.conventions import VENDORS as VENDORS  # noqa: E402

# Colour-blind-safe (Okabe-Ito) colours; "pooled" and "held-out" get neutral tones.
VENDOR_COLORS: dict[str, str] = {
    "Siemens": "#0072B2",
    "Philips": "#E69F00",
    "GE": "#009E73",
    "Canon": "#CC79A7",
    "pooled": "#555555",
    "macro": "#999999",
}
LABEL_NAMES: dict[int, str] = {0: "NOR", 1: "disease"}
LABEL_COLORS: dict[int, str] = {0: "#56B4E9", 1: "#D55E00"}


def vendor_color(vendor: str) -> str:
    """The kit's colour for a vendor (grey for anything unknown, never an error in a plot)."""
    return VENDOR_COLORS.get(vendor, "#777777")


def apply_style() -> None:
    """Readable defaults: larger fonts, light grid, tight layout, no top/right spines."""
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 120,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.constrained_layout.use": True,
    })


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``OUT/figures/<name>.png`` (stable names, so reports can link them)."""
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    return path
