"""An interactive explorer of Med-DualLoRA's adapter norms: pick a vendor, a block and a round.

The static figures of notebook 04 show every owner at the last round (heatmaps) or totals over
rounds. The explorer lets a reader follow one site: per adapted module, how far the global
adapter (shared by the federation) and that vendor's local adapter move the frozen weights
(``||s B A||_F``) at the chosen round, and how both totals evolve. ``AdapterNormExplorer`` is the
ipywidgets panel; ``norm_explorer_figure`` draws one selection as a still figure (the fallback
when no widget front end is available, e.g. under papermill).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from duallora.plots.adapters import GLOBAL_COLOR, MODULE_ORDER, _owners
from duallora.plots.style import apply_style, vendor_color
from duallora.results.adapter_norms import NORM_COLUMNS

ALL_BLOCKS = "all"


def explorer_choices(norms: pd.DataFrame) -> tuple[list[str], list[int], list[int]]:
    """Vendors that hold a local adapter, adapted blocks and logged rounds, in display order."""
    vendors = [owner for owner in _owners(norms) if owner != "server"]
    if norms.empty or not vendors:
        raise ValueError("the norms table has no local (per-vendor) adapter rows to explore")
    return (vendors, sorted(int(b) for b in norms["block"].unique()),
            sorted(int(r) for r in norms["round"].unique()))


def _combined(rows: pd.DataFrame, by: list[str]) -> pd.Series:
    """Frobenius norm over several layers: the root of the summed squared norms."""
    return rows.groupby(by)["norm"].apply(lambda s: float(np.sqrt((s ** 2).sum())))


def norm_explorer_figure(norms: pd.DataFrame, vendor: str, block: int | str = ALL_BLOCKS,
                         round_idx: int | None = None) -> plt.Figure:
    """Left: per module, the global and ``vendor``'s local norm at ``round_idx`` (last round by
    default) in ``block`` (or every adapted block together). Right: both totals per round."""
    apply_style()
    norms = norms[list(NORM_COLUMNS)]
    vendors, blocks, rounds = explorer_choices(norms)
    if vendor not in vendors:
        raise ValueError(f"vendor {vendor!r} has no local adapter here; choose one of {vendors}")
    round_idx = rounds[-1] if round_idx is None else int(round_idx)
    part = norms if block == ALL_BLOCKS else norms[norms["block"] == int(block)]
    owners = {"server": ("global adapter", GLOBAL_COLOR),
              vendor: (f"{vendor}: local adapter", vendor_color(vendor))}
    at_round = part[part["round"] == round_idx]
    modules = [m for m in MODULE_ORDER if m in set(part["module"])]
    fig, (ax_bar, ax_line) = plt.subplots(1, 2, figsize=(9.5, 3.6),  # constrained layout
                                          gridspec_kw={"width_ratios": [3, 2]})
    width = 0.38
    for offset, (owner, (label, colour)) in zip((-width / 2, width / 2), owners.items(),
                                                strict=True):
        values = _combined(at_round[at_round["owner"] == owner], ["module"])
        ax_bar.bar(np.arange(len(modules)) + offset, [values.get(m, 0.0) for m in modules],
                   width, color=colour, label=label)
    ax_bar.set_xticks(range(len(modules)), modules, rotation=20)
    where = "all adapted blocks" if block == ALL_BLOCKS else f"block {block}"
    ax_bar.set(ylabel="||s B A||_F", title=f"{where}, round {round_idx}")
    ax_bar.legend(fontsize=8)
    for owner, (label, colour) in owners.items():
        totals = _combined(part[part["owner"] == owner], ["round"])
        ax_line.plot(totals.index, totals.to_numpy(), marker="o", ms=4, lw=2, color=colour,
                     ls="-" if owner == "server" else "--", label=label)
    ax_line.axvline(round_idx, color="#999999", lw=1, ls=":")
    ax_line.set_xticks(rounds if len(rounds) <= 12 else rounds[:: max(1, len(rounds) // 10)])
    ax_line.set(xlabel="round", ylabel="total over modules", title="over rounds")
    fig.suptitle(f"Adapter norms: the federation's global adapter and {vendor}'s local one",
                 fontsize=10)
    return fig


class AdapterNormExplorer:
    """ipywidgets panel over a run's ``adapter_norms.csv`` table (vendor, block, round)."""

    def __init__(self, norms: pd.DataFrame):
        import ipywidgets as widgets

        self.norms = norms[list(NORM_COLUMNS)]
        vendors, blocks, rounds = explorer_choices(self.norms)
        self.vendor = widgets.Dropdown(options=vendors, value=vendors[0], description="vendor")
        self.block = widgets.Dropdown(
            options=[(ALL_BLOCKS, ALL_BLOCKS)] + [(f"block {b}", b) for b in blocks],
            value=ALL_BLOCKS, description="block")
        self.round = widgets.IntSlider(min=rounds[0], max=rounds[-1], value=rounds[-1],
                                       description="round")
        self.output = widgets.Output()
        for control in (self.vendor, self.block, self.round):
            control.observe(lambda _change: self.draw(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.vendor, self.block]), self.round,
                                    self.output])
        self.draw()

    def draw(self) -> None:
        self.output.clear_output(wait=True)
        with self.output:
            fig = norm_explorer_figure(self.norms, self.vendor.value, self.block.value,
                                       self.round.value)
            plt.show()
            plt.close(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
