"""v2 nuisance family, vendor appearance strength and the three named cells (issue 38)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from data_prep.conventions import LV
from data_prep.phantoms.acquisition import render_v2
from data_prep.phantoms.appearance import STYLES
from data_prep.phantoms.balanced_cohorts import balanced_draws
from data_prep.phantoms.centres import draw_centres
from data_prep.phantoms.nuisance import (
    NO_NUISANCE,
    REFERENCE_VENDOR,
    SubjectNuisance,
    appearance_style,
    draw_nuisance,
    tilt_offsets,
)
from data_prep.phantoms.shifts import CONFIG_PATH, load_config, parse_shifts
from duallora.errors import KitError


def _draws(spec: str, seed: int = 3, n: int = 2) -> list:
    return balanced_draws(draw_centres(parse_shifts(spec), seed), n, 0, seed, "test")


def test_nuisance_strength_zero_renders_what_no_nuisance_renders() -> None:
    # the renderer without the family (no ranges at all) and at strength 0: the same bytes
    for draw in _draws("acq=1,mix=1,label=1,nuis=0")[::3]:
        bare = dataclasses.replace(draw, centre=dataclasses.replace(draw.centre, nuisance={}))
        a, b = render_v2(draw, "ed_es").phantom, render_v2(bare, "ed_es").phantom
        np.testing.assert_array_equal(a.cine, b.cine)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_nuisance_draws_stay_in_range_and_change_the_images() -> None:
    shifts = parse_shifts("realistic")
    ranges = shifts.subject_ranges()
    values = [draw_nuisance(ranges, seed) for seed in range(400)]
    for name, (lo, hi) in ranges.items():
        column = np.array([getattr(v, name) for v in values])
        assert column.min() >= lo and column.max() <= hi
        assert column.max() - column.min() > 0.8 * (hi - lo)  # the whole range is used
    assert draw_nuisance(ranges, 7) == draw_nuisance(ranges, 7)  # per subject, by seed
    assert draw_nuisance({}, 7) == NO_NUISANCE
    half = parse_shifts("realistic,nuis=0.5").subject_ranges()
    assert half["tilt_deg"] == pytest.approx((0.0, 7.5))
    draw = _draws("realistic")[0]
    off = dataclasses.replace(draw, centre=dataclasses.replace(draw.centre, nuisance={}))
    assert not np.array_equal(render_v2(draw, "ed_es").phantom.cine,
                              render_v2(off, "ed_es").phantom.cine)


def test_tilt_moves_each_slice_along_the_lean() -> None:
    heights = np.array([90.0, 60.0, 30.0, 0.0])
    lean = SubjectNuisance(tilt_deg=10.0, tilt_azimuth=0.0)
    offsets = tilt_offsets(lean, heights, pivot_mm=45.0, spacing=1.5)
    expected = np.rint((heights - 45.0) * math.tan(math.radians(10.0)) / 1.5)
    np.testing.assert_array_equal(offsets[:, 0], expected)
    assert not offsets[:, 1].any()
    # rendered: the LV centroid drifts across slices much more with a 15 degree lean
    draw = _draws("realistic")[0]
    drift = []
    for tilt in (0.0, 15.0):
        ranges = {"tilt_deg": (tilt, tilt)}
        scan = render_v2(dataclasses.replace(
            draw, centre=dataclasses.replace(draw.centre, nuisance=ranges)), "ed_es")
        lv = scan.phantom.labels[..., 0] == LV
        slices = [k for k in range(lv.shape[2]) if lv[:, :, k].sum() > 20]
        centres = np.array([np.argwhere(lv[:, :, k]).mean(axis=0) for k in slices])
        drift.append(float(np.linalg.norm(centres[0] - centres[-1])))
    assert drift[1] > drift[0] + 3  # pixels


def test_appearance_strength_blends_vendor_styles() -> None:
    for vendor in STYLES:
        assert appearance_style(vendor, 1.0) is STYLES[vendor]
        shared = appearance_style(vendor, 0.0)
        assert dataclasses.astuple(shared) == dataclasses.astuple(STYLES[REFERENCE_VENDOR])
    half = appearance_style("GE", 0.5)
    ge, ref = STYLES["GE"], STYLES[REFERENCE_VENDOR]
    assert half.snr == pytest.approx(tuple((a + b) / 2 for a, b in zip(ge.snr, ref.snr,
                                                                         strict=True)))
    assert half.matrices == ge.matrices


def test_cells_and_strength_limits() -> None:
    config = load_config()
    negative, realistic, positive = (parse_shifts(c) for c in ("negative", "realistic",
                                                               "positive"))
    assert negative.as_dict() == {"acq": 0, "mix": 0, "label": 0, "nuis": 1, "app": 0,
                                  "camps": 0}
    assert realistic == parse_shifts(None) and realistic.realistic
    assert positive.camps == 2.0 and positive.label == 0.0 and not positive.realistic
    assert set(config["cells"]) == {"negative", "realistic", "positive"}
    with pytest.raises(KitError, match=r"outside \[0, 3\]"):
        parse_shifts("label=3.5")
    with pytest.raises(KitError, match=r"app=1.5 is outside \[0, 1\]"):
        parse_shifts("app=1.5")
    with pytest.raises(KitError, match="cell name"):
        parse_shifts("nonsense")
    # label=3: every centre's rule three times as far from the reference as at label=1
    lvef3 = [c.rule["lvef_cut"] for c in draw_centres(parse_shifts("label=3"), 0)]
    lvef1 = [c.rule["lvef_cut"] for c in draw_centres(realistic, 0)]
    np.testing.assert_allclose(np.array(lvef3) - 0.5, 3 * (np.array(lvef1) - 0.5))


def test_annotation_camps_split_vendors_two_and_two() -> None:
    from data_prep.phantoms.centres import vendor_camps

    for seed in range(5):
        camps = vendor_camps(seed)
        assert sorted(camps.values()) == [-1, -1, 1, 1]
        centres = draw_centres(parse_shifts("positive"), seed)
        for centre in centres:  # every centre of a camp shares the camp's cut-offs
            side = camps[centre.vendor]
            assert centre.rule["lvef_cut"] == pytest.approx(0.5 + side * 2 * 0.05)
            assert centre.rule["lvedvi_max"] == pytest.approx(100.0 - side * 2 * 10.0)
            assert centre.rule["noise_ef"] == pytest.approx(0.02)  # label=0: reference noise
    assert len({tuple(sorted(vendor_camps(s).items())) for s in range(8)}) > 1


def test_a_config_without_the_new_families_keeps_the_old_generator(tmp_path) -> None:
    text = CONFIG_PATH.read_text()
    old = text.split("# ---- 4. nuisance")[0].replace("nuis = 1.0", "#").replace("app = 1.0", "#")
    path = tmp_path / "old.toml"
    path.write_text(old)
    shifts = parse_shifts(None, load_config(path))
    assert shifts.nuis == 0.0 and shifts.app == 1.0 and shifts.subject_ranges() == {}
