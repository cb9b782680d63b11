"""Plotting helpers shared by every notebook: one vendor palette, one way to save figures.

Vendors keep the same colour in every figure of the kit so that a reader can follow a site from
the data notebook to the Med-DualLoRA results without reading legends twice.
"""

from duallora.plots.style import (
    LABEL_COLORS,
    LABEL_NAMES,
    VENDOR_COLORS,
    VENDORS,
    apply_style,
    save_figure,
    vendor_color,
)

__all__ = [
    "LABEL_COLORS",
    "LABEL_NAMES",
    "VENDOR_COLORS",
    "VENDORS",
    "apply_style",
    "save_figure",
    "vendor_color",
]
