"""Plotting helpers shared by every notebook: one vendor palette, one way to save figures.

Vendors keep the same colour in every figure of the kit so that a reader can follow a site from
the data notebook to the Med-DualLoRA results without reading legends twice.

- ``style``     the vendor and label palettes, fonts, ``save_figure``.
- ``data``      notebook 01: cohort counts, intensities before / after harmonization.
- ``viewer``    the cine viewer of the raw short-axis stacks (ED/ES, masks).
- ``model``     notebook 02: model sizes, MAE reconstructions, embedding projections.
- ``results``   notebooks 03-05: metrics with CIs, curves, bytes, significance, round times.
- ``adapters``  notebook 04: adapter norms per block, module and owner.
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
