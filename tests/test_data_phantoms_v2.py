"""Phantoms v2: shifts, centres, annotation rules, headroom gate, fast path, determinism."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_data_phantoms import tree_sha256  # tests/ is on sys.path (rootdir conftest)

from data_prep.cli import main as data_prep_main
from data_prep.conventions import LV, VENDORS
from data_prep.harmonize import harmonize_datasets, harmonize_subject
from data_prep.phantoms import Shifts, no_shift, parse_shifts, write_phantom_cohort
from data_prep.phantoms.acquisition import render_v2
from data_prep.phantoms.balanced_cohorts import balanced_draws, write_harmonized_cohort
from data_prep.phantoms.centres import centres_by_vendor, draw_centres
from data_prep.phantoms.cohort import RawTask, _write_task
from data_prep.phantoms.headroom import GATE, headroom_report
from data_prep.phantoms.labels import annotate, draw_latent, measurements
from data_prep.phantoms.sampling import draw_one
from data_prep.readers import read_mnms2
from duallora.data import read_metadata
from duallora.errors import KitError


def test_shift_spec_parsing_keeps_defaults_and_rejects_bad_values() -> None:
    shifts = parse_shifts("acq=0.25,label=0")
    defaults = parse_shifts(None)
    assert (shifts.acq, shifts.mix, shifts.label) == (0.25, defaults.mix, 0.0)
    assert parse_shifts(shifts.spec()) == shifts
    for bad in ("acq=3.5", "app=2", "noise=1", "acq", "mix=x"):
        with pytest.raises(KitError):
            parse_shifts(bad)


def test_centres_scale_one_draw_between_reference_and_range() -> None:
    config = parse_shifts(None).config
    zero = draw_centres(no_shift(), seed=3)
    full = draw_centres(parse_shifts("acq=1,mix=1,label=1"), seed=3)
    half = draw_centres(parse_shifts("acq=0.5,mix=0.5,label=0.5"), seed=3)
    assert [c.name for c in full][-1].endswith("UNSEEN") and full[-1].unseen
    assert {v: len(g) for v, g in centres_by_vendor(full).items()} == \
        {"Siemens": 3, "Philips": 2, "GE": 2, "Canon": 1}
    for c0, c1, ch in zip(zero, full, half, strict=True):
        for family in ("acq", "mix", "rule"):
            section = config["label" if family == "rule" else family]
            for name, value in getattr(c1, family).items():
                ref, lo, hi = section[name]
                assert getattr(c0, family)[name] == pytest.approx(ref)  # strength 0: reference
                assert lo - 1e-9 <= value <= hi + 1e-9  # strength 1: inside the range
                assert getattr(ch, family)[name] == pytest.approx((ref + value) / 2)
        assert c0.pathology_mix == pytest.approx(zero[0].pathology_mix)  # mix 0: pooled mix
    assert len({round(c.rule["lvef_cut"], 4) for c in full}) == len(full)  # centres differ
    other = draw_centres(parse_shifts("acq=1,mix=1,label=1"), seed=4)
    assert [c.rule for c in other] != [c.rule for c in full]  # another cohort seed, other draw


def test_annotation_policy_is_the_only_source_of_label_disagreement() -> None:
    shared = draw_centres(parse_shifts("acq=1,mix=1,label=0"), seed=0)
    own = draw_centres(parse_shifts("acq=1,mix=1,label=1"), seed=0)
    a, b = shared[0], shared[5]  # two Siemens centres (ACDC and M&Ms-2 like)
    disagree_shared = disagree_own = 0
    for k in range(400):
        latent = draw_latent(a, 10_000 + k)
        disagree_shared += annotate(latent, a, "acdc")[0] != annotate(latent, b, "acdc")[0]
        disagree_own += annotate(latent, own[0], "acdc")[0] != annotate(latent, own[5],
                                                                        "acdc")[0]
    assert disagree_shared == 0  # same rule, same reading: same label for the same heart
    assert disagree_own > 0  # own thresholds, noise and flips: borderline hearts differ
    m = measurements(draw_latent(a, 1, pathology="DCM"))
    assert set(m) == {"lvef", "lvedvi", "max_wall", "rvedvi", "rvef"} and 0 < m["lvef"] < 1


def test_headroom_gate_at_annotation_strength_zero() -> None:
    # the report's own sizes (4,000 training, 2,000 balanced test draws per vendor), all other
    # shifts at full strength: only the annotation policy may create headroom
    control = headroom_report(parse_shifts("acq=1,mix=1,label=0"), seed=0)
    assert control["mean_headroom"] <= GATE and control["gate"]["passed"]
    assert set(control["per_vendor"]) == set(VENDORS)
    # the gate can fail: centres with clearly different rules (wider than the literature
    # ranges, so the effect is far above sampling noise) give a per-vendor oracle headroom
    config = copy.deepcopy(parse_shifts(None).config)
    config["label"].update(lvef_cut=[0.5, 0.35, 0.65], wall_max=[13.0, 10.0, 16.0],
                           rvedvi_max=[110.0, 60.0, 120.0])
    shifted = headroom_report(Shifts(1.0, 1.0, 1.0, config=config), seed=0, n_train=2000,
                              n_test=1000)
    assert shifted["mean_headroom"] > 4 * GATE
    assert shifted["pooled_oracle_ba"] < control["pooled_oracle_ba"]


def test_fast_path_gives_the_raw_path_harmonized_volumes(tmp_path: Path) -> None:
    centres = draw_centres(parse_shifts("acq=0.4,mix=1,label=1"), seed=2)
    draw = draw_one(centres[0], 2, "test", 1)
    full = render_v2(draw, "all")
    lv = (full.phantom.labels == LV).sum(axis=(0, 1, 2))
    assert full.es_frame == int(np.argmin(lv))  # ES is the frame of least LV volume
    assert full.n_frames > 7  # acquisition strength raises the compact reference frame count
    # raw path: write the subject in the M&Ms-2 layout, read and harmonize it from disk
    root = tmp_path / "MnM2"
    row = _write_task((RawTask("mnms2", "001", "", draw), root))
    (root / "dataset_information.csv").write_text(pd.DataFrame([row]).to_csv(index=False))
    records, skips = read_mnms2(root)
    assert not skips and records[0].centre == centres[0].name
    raw = harmonize_subject(records[0], tmp_path / "raw_h")
    fast = write_harmonized_cohort(tmp_path / "fast_h", [draw], "test", workers=1,
                                   progress=False)
    for key in ("ed_path", "es_path", "ed_seg_path", "es_seg_path"):
        a = nib.load(str(tmp_path / "raw_h" / raw[key]))
        b = nib.load(str(tmp_path / "fast_h" / fast[key].iloc[0]))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    assert fast["es_frame"].iloc[0] == full.es_frame and fast["label"].iloc[0] == draw.label


def _volumes_sha256(root: Path) -> str:
    """Hash of the harmonized volumes only (done.json records absolute source paths)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.nii.gz")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_v2_cohort_is_deterministic_and_meets_the_contract(tmp_path: Path) -> None:
    # acquisition at strength 0 keeps the raw renders compact (7 frames); the acquisition
    # effects themselves are covered by the fast-path test above
    shifts = parse_shifts("acq=0,mix=1,label=1")
    options = dict(scale=0.01, workers=2, shifts=shifts, test_per_vendor=2, unseen_test=2,
                   min_per_label=1, headroom_sizes=(300, 100), progress=False)
    first = write_phantom_cohort(tmp_path / "a", seed=0, **options)
    again = write_phantom_cohort(tmp_path / "b", seed=0, **options)
    assert tree_sha256(first) == tree_sha256(again)  # raw, test cohort, centres, headroom
    metas = []
    for name, root in (("ha", first), ("hb", again)):
        meta = harmonize_datasets(acdc=root / "ACDC" / "database",
                                  mnms=root / "MnM" / "OpenDataset", mnms2=root / "MnM2",
                                  out=tmp_path / name, seed=0, workers=2, progress=False)
        assert set(meta["vendor"]) == set(VENDORS) and set(meta["label"]) == {0, 1}
        assert meta["centre"].isin(pd.read_csv(root / "centres.csv")["centre"]).all()
        metas.append(meta.drop(columns="source_cine"))  # absolute paths differ, by design
    assert _volumes_sha256(tmp_path / "ha") == _volumes_sha256(tmp_path / "hb")
    pd.testing.assert_frame_equal(metas[0], metas[1])
    info = json.loads((first / "cohort.json").read_text())
    assert info["generator"] == "v2" and info["shifts"] == {"acq": 0.0, "mix": 1.0, "label": 1.0,
                                                          "nuis": 1.0, "app": 1.0, "camps": 0.0}
    # the balanced test cohort: the harmonized contract, 1 NOR + 1 disease per vendor, unseen
    meta = read_metadata(first / "test_harmonized")
    assert (meta["split"] == "test").all() and meta["subject_id"].is_unique
    seen = meta[meta["unseen_centre"] == 0]
    assert seen.groupby("vendor")["label"].agg(["size", "sum"]).to_dict() == \
        {"size": dict.fromkeys(sorted(VENDORS), 2), "sum": dict.fromkeys(sorted(VENDORS), 1)}
    unseen = meta[meta["unseen_centre"] == 1]
    assert len(unseen) == 2 and unseen["centre"].str.endswith("UNSEEN").all()
    assert (meta["label"] == (meta["pathology"] != "NOR").astype(int)).all()
    assert pd.read_csv(first / "test_harmonized" / "skipped.csv").empty
    # another cohort seed: other centres, other subjects
    write_harmonized_cohort(tmp_path / "c", balanced_draws(draw_centres(shifts, 1), 2, 2, 1,
                                                           "test"), "test", workers=2,
                            progress=False)
    assert _volumes_sha256(tmp_path / "c") != _volumes_sha256(first / "test_harmonized")


def test_headroom_and_phantoms_command_lines(tmp_path: Path, capsys) -> None:
    code = data_prep_main(["headroom", "--shift", "label=0", "--n-train", "300", "--n-test",
                           "100", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0 and "mean headroom" in printed and "unseen centre" in printed
    report = json.loads((tmp_path / "headroom.json").read_text())
    assert report["shifts"]["label"] == 0.0 and report["n_train_per_vendor"] == 300
    code = data_prep_main(["phantoms", "--out", str(tmp_path / "x"), "--shift", "acq=7"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "outside [0, 3]" in err
    code = data_prep_main(["phantoms", "--out", str(tmp_path / "x"), "--generator", "v1",
                           "--shift", "acq=1"])
    assert code == 2 and "need the v2 generator" in capsys.readouterr().err
