"""Every plotting function draws a labelled figure in the kit's vendor colours, and saves."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from duallora.plots import VENDORS, save_figure  # noqa: E402
from duallora.plots import vendor_color as _vendor_color  # noqa: E402
from duallora.plots.adapters import (  # noqa: E402
    plot_local_share,
    plot_norm_heatmaps,
    plot_norms_over_rounds,
)
from duallora.plots.data import (  # noqa: E402
    plot_cohort_counts,
    plot_intensity_distributions,
    plot_phantoms_vs_real,
)
from duallora.plots.model import (  # noqa: E402
    plot_embeddings,
    plot_mae_reconstructions,
    plot_parameter_counts,
)
from duallora.plots.norm_explorer import (  # noqa: E402
    AdapterNormExplorer,
    explorer_choices,
    norm_explorer_figure,
)
from duallora.plots.results import (  # noqa: E402
    plot_communication,
    plot_learning_curves,
    plot_metric_bars,
    plot_significance,
    plot_vendor_metrics,
    strategy_color,
)
from duallora.plots.viewer import CineSubject, CineViewer, static_cine_figure  # noqa: E402


def _labelled(fig: plt.Figure) -> None:
    """Every visible axes with data has both axis labels (images are exempt)."""
    for ax in fig.axes:
        if not ax.get_visible() or ax.images or not (ax.lines or ax.patches or ax.collections):
            continue
        siblings = ax.get_shared_x_axes().get_siblings(ax)
        assert any(s.get_xlabel() or s.get_xticklabels() for s in siblings), \
            f"no x label on {ax.get_title()!r}"
        assert ax.get_ylabel() or ax.get_yticklabels(), f"no y label on {ax.get_title()!r}"


def _colours(fig: plt.Figure) -> set[str]:
    found = set()
    for ax in fig.axes:
        found |= {to_hex(line.get_color()) for line in ax.lines}
        found |= {to_hex(p.get_facecolor(), keep_alpha=False) for p in ax.patches}
        for coll in ax.collections:
            found |= {to_hex(c, keep_alpha=False) for c in coll.get_facecolors()}
    return found


@pytest.fixture()
def metadata() -> pd.DataFrame:
    rows = [{"subject_id": f"{v}{i}", "vendor": v, "label": i % 2,
             "split": ("train", "val", "test")[i % 3]} for v in VENDORS for i in range(6)]
    return pd.DataFrame(rows)


def test_data_figures(metadata: pd.DataFrame, tmp_path: Path) -> None:
    fig = plot_cohort_counts(metadata)
    _labelled(fig)
    assert {vendor_color(v) for v in VENDORS} <= _colours(fig)
    path = save_figure(fig, tmp_path, "01_cohort_counts")
    assert path == tmp_path / "figures" / "01_cohort_counts.png" and path.stat().st_size > 1000
    rng = np.random.default_rng(0)
    samples = pd.concat([pd.DataFrame({"vendor": v, "stage": s,
                                       "intensity": rng.gamma(2, 100 if s == "raw" else 0.1, 500)})
                         for v in VENDORS for s in ("raw", "harmonized")])
    fig = plot_intensity_distributions(samples)
    _labelled(fig)
    assert {vendor_color(v) for v in VENDORS} <= _colours(fig)
    volume = rng.random((32, 32, 16))
    fig = plot_phantoms_vs_real([("a", "GE", volume)], [("real acdc", volume)])
    assert len([ax for ax in fig.axes if ax.images]) == 2
    # without real samples the bottom row says so, and where CineMA's examples come from
    fig = plot_phantoms_vs_real([("a", "GE", volume)], [])
    assert len([ax for ax in fig.axes if ax.images]) == 1
    notes = " ".join(text.get_text() for ax in fig.axes for text in ax.texts)
    assert "No real samples" in notes and "mathpluscode/CineMA" in notes
    plt.close("all")


def test_cine_viewer_and_static_figure() -> None:
    cine = np.random.default_rng(1).random((24, 24, 5, 6))
    mask = np.zeros((24, 24, 5), dtype=np.int16)
    mask[8:16, 8:16] = 1
    subject = CineSubject("mnms/X", "Philips", cine, ed=0, es=3, masks={0: mask, 3: mask})
    assert subject.frame_name(0) == "ED" and subject.frame_name(3) == "ES"
    assert subject.mask(2, 1) is None and subject.mask(2, 3).shape == (24, 24)
    fig = static_cine_figure([subject], n_slices=2)
    assert sum(1 for ax in fig.axes if ax.images) == 4
    other = CineSubject("acdc/Y", "Siemens", cine[..., :4], ed=1, es=2)
    viewer = CineViewer({"Philips": {"mnms/X": lambda: subject},
                         "Siemens": {"acdc/Y": lambda: other}})
    assert viewer.frame.max == 6 and viewer.frame.value == 1  # opens on ED
    viewer.to_es.click()
    assert viewer.frame.value == 4
    viewer.vendor.value = "Siemens"
    assert viewer.subject.value == "acdc/Y" and viewer.frame.max == 4
    plt.close("all")


def test_adapter_norm_explorer() -> None:
    """Bars are the Frobenius norm over the picked layers; the widget follows its controls."""
    rng = np.random.default_rng(3)
    rows = [{"round": r, "owner": owner, "adapter": "global" if owner == "server" else "local",
             "block": b, "module": m, "norm": float(rng.random())}
            for r in (1, 2, 3) for owner in ("server", "GE", "Siemens") for b in (4, 5)
            for m in ("attn.q", "mlp.fc1")]
    norms = pd.DataFrame(rows)
    assert explorer_choices(norms) == (["Siemens", "GE"], [4, 5], [1, 2, 3])
    fig = norm_explorer_figure(norms, "GE", round_idx=2)
    bars = fig.axes[0].patches
    expected = [np.sqrt((norms.query("round == 2 and owner == @owner and module == @m")["norm"]
                         ** 2).sum())
                for owner in ("server", "GE") for m in ("attn.q", "mlp.fc1")]
    assert np.allclose([bar.get_height() for bar in bars], expected)
    one = norm_explorer_figure(norms, "GE", block=5, round_idx=2)
    assert np.isclose(one.axes[0].patches[0].get_height(),
                      norms.query("round == 2 and owner == 'server' and block == 5 and "
                                  "module == 'attn.q'")["norm"].item())
    with pytest.raises(ValueError, match="no local adapter"):
        norm_explorer_figure(norms, "Canon")
    explorer = AdapterNormExplorer(norms)
    assert explorer.vendor.value == "Siemens" and explorer.round.value == 3
    explorer.block.value = 4
    explorer.round.value = 1
    assert explorer.block.value == 4 and explorer.round.value == 1
    plt.close("all")


def test_model_figures(metadata: pd.DataFrame) -> None:
    from duallora.notebooks.exploration import parameter_table

    fig = plot_parameter_counts(parameter_table(["tiny", "tutorial"]))
    _labelled(fig)
    assert fig.axes[0].get_yscale() == "log"
    volumes = np.random.default_rng(2).random((2, 1, 16, 16, 4))
    fig = plot_mae_reconstructions(volumes, volumes, volumes, ["a", "b"], ["GE", "Canon"])
    assert sum(1 for ax in fig.axes if ax.images) == 6
    coords = np.random.default_rng(3).normal(size=(len(metadata), 2))
    fig = plot_embeddings({"PCA": coords}, metadata["vendor"], metadata["label"])
    _labelled(fig)
    assert {vendor_color(v) for v in VENDORS} <= _colours(fig)
    plt.close("all")


def _metric_table() -> pd.DataFrame:
    rows = []
    for strategy in ("fedavg_lora", "med_duallora"):
        for scope in (*VENDORS, "macro"):
            for metric in ("balanced_accuracy", "sensitivity", "specificity"):
                rows.append({"strategy": strategy, "scope": scope, "metric": metric,
                             "value": 0.7, "ci_low": 0.5, "ci_high": 0.9, "n": 4})
    return pd.DataFrame(rows)


def test_result_figures() -> None:
    table = _metric_table()
    fig = plot_vendor_metrics(table)
    _labelled(fig)
    assert to_hex(strategy_color("med_duallora")) in _colours(fig)
    ticks = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert ticks == [*VENDORS, "macro"]
    curves = pd.DataFrame([{"strategy": s, "round": r, "client": v, "value": 0.5 + r / 10}
                           for s in ("single_site", "centralized") for r in (1, 2)
                           for v in (VENDORS if s == "single_site" else ["pooled"])])
    fig = plot_learning_curves(curves)
    assert {vendor_color(v) for v in VENDORS} <= _colours(fig)
    costs = pd.DataFrame({"strategy": ["single_site", "fedavg_lora"], "bytes_total": [0.0, 2e6]})
    per_round = pd.DataFrame({"strategy": ["fedavg_lora"] * 2, "round": [1, 2],
                              "direction": ["up", "down"], "bytes": [1e6, 1e6]})
    fig = plot_communication(costs, per_round)
    _labelled(fig)
    significance = pd.DataFrame([{"reference": "med_duallora", "baseline": "fedavg_lora",
                                  "scope": s, "diff": 0.1, "ci_low": -0.1, "ci_high": 0.3,
                                  "p_bootstrap": 0.01} for s in (*VENDORS, "pooled")])
    fig = plot_significance(significance)
    assert "*" in [t.get_text() for t in fig.axes[0].texts]
    fig = plot_metric_bars(table, scope="macro", order=["med_duallora", "fedavg_lora"])
    top = max(fig.axes[0].get_yticklabels(), key=lambda t: t.get_position()[1])
    assert top.get_text() == "med_duallora"  # the first of ``order`` is drawn on top
    plt.close("all")


def test_adapter_figures() -> None:
    rows = []
    for rnd in (1, 2):
        for owner, adapter in (("server", "global"), ("GE", "local"), ("Canon", "local")):
            for block in (4, 5):
                for module in ("attn.q", "mlp.fc1"):
                    rows.append({"round": rnd, "owner": owner, "adapter": adapter,
                                 "block": block, "module": module, "norm": 0.1 * rnd})
    norms = pd.DataFrame(rows)
    fig = plot_norm_heatmaps(norms)
    assert sum(1 for ax in fig.axes if ax.images) == 3
    from duallora.results.tables import norm_totals

    totals = norm_totals(norms)
    assert totals[(totals["round"] == 2) & (totals["owner"] == "GE")]["norm"].iloc[0] == \
        pytest.approx(np.sqrt(4 * 0.2 ** 2))
    fig = plot_norms_over_rounds(totals)
    _labelled(fig)
    assert {vendor_color("GE"), vendor_color("Canon")} <= _colours(fig)
    fig = plot_local_share(norms)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights and all(h == pytest.approx(0.5) for h in heights)
    plt.close("all")


def vendor_color(vendor: str) -> str:
    """The kit's vendor colour, lower-case hex as matplotlib's ``to_hex`` returns it."""
    return to_hex(_vendor_color(vendor))
