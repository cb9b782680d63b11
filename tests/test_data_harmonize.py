"""Harmonization: the docs/CONTRACTS.md outputs, LV centring, systole, broken subjects, re-runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from data_prep.cli import main as data_prep_main
from data_prep.harmonize import harmonize_datasets
from data_prep.split import federated_split
from data_prep.volumes import save_nifti_atomic
from duallora.data import read_metadata

VENDORS = {"Siemens", "Philips", "GE", "Canon"}


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def test_metadata_has_the_contract_columns_and_every_vendor(harmonized_dir: Path) -> None:
    meta = read_metadata(harmonized_dir)  # validates the INTERNALS.md columns
    assert meta["subject_id"].is_unique
    assert set(meta["vendor"]) == VENDORS
    assert set(meta["dataset"]) == {"acdc", "mnms", "mnms2"}
    assert set(meta["label"]) == {0, 1}
    assert (meta["label"] == (meta["pathology"] != "NOR").astype(int)).all()
    for vendor, group in meta.groupby("vendor"):
        for split in ("train", "val", "test"):
            labels = set(group.loc[group["split"] == split, "label"])
            assert labels == {0, 1}, f"{vendor} {split} holds labels {labels}"
    skipped = pd.read_csv(harmonized_dir / "skipped.csv")
    assert list(skipped.columns) == ["subject_id", "source_path", "reason"]
    assert skipped.empty


def test_volumes_are_192x192x16_at_1x1x10mm_in_uint8(harmonized_dir: Path) -> None:
    meta = read_metadata(harmonized_dir)
    for _, row in meta.iterrows():
        for key in ("ed_path", "es_path"):
            assert not Path(row[key]).is_absolute()
            image = _load(harmonized_dir / row[key])
            assert image.shape == (192, 192, 16)
            assert image.get_data_dtype() == np.uint8
            np.testing.assert_allclose(image.header.get_zooms(), (1, 1, 10), atol=1e-4)
            data = np.asarray(image.dataobj)
            assert data.max() == 255 and data.mean() > 10  # scaled to the full range, not empty
    assert not list(harmonized_dir.rglob("*.tmp*"))  # atomic writes leave nothing behind


def test_lv_is_centred_and_es_blood_pool_is_smaller(harmonized_dir: Path) -> None:
    meta = read_metadata(harmonized_dir)
    with_seg = meta[meta["ed_seg_path"] != ""]
    assert len(with_seg) >= len(meta) - 3
    for _, row in with_seg.iterrows():
        ed = np.asarray(_load(harmonized_dir / row["ed_seg_path"]).dataobj)
        es = np.asarray(_load(harmonized_dir / row["es_seg_path"]).dataobj)
        assert set(np.unique(ed)) == {0, 1, 2, 3}, row["subject_id"]
        cx, cy, _ = ndimage.center_of_mass(ed == 1)
        assert abs(cx - 95.5) <= 1.0 and abs(cy - 95.5) <= 1.0, row["subject_id"]
        assert (es == 1).sum() < (ed == 1).sum(), row["subject_id"]
        # unified labels: the LV (1) is at the centre and ringed by myocardium (2), ACDC included
        mid = int(round(ndimage.center_of_mass(ed == 1)[2]))
        assert ed[96, 96, mid] == 1, row["subject_id"]
        assert row["crop_source"] == "seg_lv"


def test_split_is_seeded_and_stratified() -> None:
    frame = pd.DataFrame({"subject_id": [f"s{i:03d}" for i in range(60)],
                          "vendor": ["A"] * 40 + ["B"] * 20,
                          "label": [i % 4 == 0 for i in range(60)]}).astype({"label": int})
    first, again = federated_split(frame, 0), federated_split(frame, 0)
    assert first.equals(again)
    assert not first.equals(federated_split(frame, 1))
    counts = frame.assign(split=first).groupby(["vendor", "label", "split"]).size()
    assert counts[("A", 0, "train")] == 18 and counts[("A", 0, "val")] == 6
    assert counts[("B", 1, "test")] == 1 and counts[("B", 1, "train")] == 3
    # adding subjects to one vendor does not reshuffle another
    more = pd.concat([frame, pd.DataFrame({"subject_id": ["z1", "z2"], "vendor": ["B", "B"],
                                           "label": [0, 0]})], ignore_index=True)
    assert federated_split(more, 0)[:40].equals(first[:40])


def _copy_subjects(raw: Path, dest: Path) -> dict[str, Path]:
    """A small raw tree (two ACDC, all M&Ms, three M&Ms-2 subjects) to break on purpose."""
    acdc_src = raw / "ACDC" / "database" / "training"
    patients = sorted(p for p in acdc_src.iterdir() if p.is_dir())[:3]
    for p in patients:
        shutil.copytree(p, dest / "ACDC" / "database" / "training" / p.name)
    shutil.copytree(raw / "MnM" / "OpenDataset", dest / "MnM" / "OpenDataset")
    mnms2 = dest / "MnM2"
    table = pd.read_csv(raw / "MnM2" / "dataset_information.csv").dropna(how="all").head(3)
    table["SUBJECT_CODE"] = table["SUBJECT_CODE"].astype(int)
    for code in table["SUBJECT_CODE"].astype(int):
        shutil.copytree(raw / "MnM2" / "dataset" / f"{code:03d}", mnms2 / "dataset" / f"{code:03d}")
    (mnms2 / "dataset_information.csv").write_text(table.to_csv(index=False) + ",,,,\n" * 5)
    return {"acdc": dest / "ACDC" / "database", "mnms": dest / "MnM" / "OpenDataset",
            "mnms2": mnms2, "patients": patients, "mnms2_codes": table["SUBJECT_CODE"].tolist()}


def test_broken_subjects_are_skipped_with_reasons(phantom_raw_dir: Path, tmp_path: Path) -> None:
    tree = _copy_subjects(phantom_raw_dir, tmp_path / "raw")
    acdc = tree["acdc"] / "training"
    names = [p.name for p in tree["patients"]]
    # ACDC: a truncated frame file, and ES beyond NbFrame.
    ed_file = sorted((acdc / names[0]).glob("*_frame??.nii.gz"))[0]
    ed_file.write_bytes(ed_file.read_bytes()[:2000])
    cfg = acdc / names[1] / "Info.cfg"
    cfg.write_text(cfg.read_text().replace("ES:", "ES: 99\nOldES:"))
    # M&Ms: ED index out of range, NaNs in the image, an unknown vendor letter.
    mnms_csv = next(tree["mnms"].glob("*.csv"))
    table = pd.read_csv(mnms_csv, index_col=0)
    folders = {p.name: p for p in tree["mnms"].glob("*/*") if p.is_dir()}
    folders.update({p.name: p for p in tree["mnms"].glob("Training/*/*") if p.is_dir()})
    out_of_range, with_nan, bad_vendor = table["External code"].iloc[:3]
    table.loc[table["External code"] == out_of_range, "ED"] = 40
    table.loc[table["External code"] == bad_vendor, "Vendor"] = "X"
    table.to_csv(mnms_csv)
    nan_file = folders[with_nan] / f"{with_nan}_sa.nii.gz"
    image = nib.load(str(nan_file))
    data = np.asarray(image.dataobj).astype(np.float32)
    data[0, 0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(nan_file))
    # M&Ms-2: a missing ED file and a 2D ES file.
    first, second = (f"{c:03d}" for c in tree["mnms2_codes"][:2])
    (tree["mnms2"] / "dataset" / first / f"{first}_SA_ED.nii.gz").unlink()
    es_file = tree["mnms2"] / "dataset" / second / f"{second}_SA_ES.nii.gz"
    es = nib.load(str(es_file))
    nib.save(nib.Nifti1Image(np.asarray(es.dataobj)[:, :, 0], es.affine), str(es_file))

    out = tmp_path / "harmonized"
    meta = harmonize_datasets(acdc=tree["acdc"], mnms=tree["mnms"], mnms2=tree["mnms2"],
                              out=out, seed=0, workers=2, progress=False)
    skipped = pd.read_csv(out / "skipped.csv").set_index("subject_id")
    expected = {
        f"acdc/{names[0]}": ed_file.name,
        f"acdc/{names[1]}": "ES=99",
        f"mnms/{out_of_range}": "ED index 40",
        f"mnms/{with_nan}": "NaN",
        f"mnms/{bad_vendor}": "unknown vendor",
        f"mnms2/{first}": f"{first}_SA_ED.nii.gz: missing file",
        f"mnms2/{second}": "dimensions",
    }
    assert set(skipped.index) == set(expected)
    for subject, fragment in expected.items():
        reason = skipped.loc[subject, "reason"]
        assert fragment in reason, (subject, reason)
        assert ".nii.gz" in reason or ".cfg" in reason or ".csv" in reason, reason
    n_mnms = len(table)
    assert len(meta) == 1 + (n_mnms - 3) + 1  # everything else was harmonized
    assert set(meta["subject_id"]).isdisjoint(expected)


def test_rerun_skips_completed_subjects(phantom_raw_dir: Path, tmp_path: Path) -> None:
    tree = _copy_subjects(phantom_raw_dir, tmp_path / "raw")
    out = tmp_path / "harmonized"
    first = harmonize_datasets(mnms2=tree["mnms2"], out=out, seed=0, workers=1, progress=False)
    files = sorted(out.glob("volumes/mnms2/*/ed.nii.gz"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    redo = files[0].parent
    (redo / "done.json").unlink()  # as if the run had died before finishing this subject
    again = harmonize_datasets(mnms2=tree["mnms2"], out=out, seed=0, workers=1, progress=False)
    assert again.equals(first)
    for f in files:
        changed = f.stat().st_mtime_ns != stamps[f]
        assert changed == (f.parent == redo), f


def test_atomic_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "v" / "ed.nii.gz"

    def crash(image, filename):  # writes half a file, then dies
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", crash)
    with pytest.raises(OSError):
        save_nifti_atomic(np.zeros((4, 4, 2), np.uint8), np.eye(4), target)
    assert list((tmp_path / "v").iterdir()) == []


def test_cli_reports_bad_roots_in_one_line(tmp_path: Path, capsys) -> None:
    code = data_prep_main(["harmonize", "--mnms2", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not an M&Ms-2 root" in err
    code = data_prep_main(["harmonize", "--out", str(tmp_path / "o")])
    assert code == 2 and "pass at least one of" in capsys.readouterr().err


def test_motion_fallback_and_sheared_oblique_affines() -> None:
    from data_prep.phantoms import SubjectSpec, render_phantom
    from data_prep.preprocess import harmonize_frames
    from data_prep.volumes import Frames

    ph = render_phantom(SubjectSpec("mnms", "C1TEST", "GE", "HCM", "Testing", seed=11))
    tilt = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    shear = np.array([[1.0, 0.04, 0.0], [0.0, 1.0, 0.03], [0.02, 0.0, 1.0]])  # not orthonormal
    affine = np.eye(4)
    affine[:3, :3] = tilt @ shear @ np.diag(np.sqrt((ph.affine[:3, :3] ** 2).sum(axis=0)))
    ed, es = (ph.cine[..., i].astype(np.float32) for i in (ph.ed_index, ph.es_index))
    with_seg = harmonize_frames(Frames(ed, es, ph.labels[..., ph.ed_index],
                                       ph.labels[..., ph.es_index], affine))
    without = harmonize_frames(Frames(ed, es, None, None, affine))
    assert with_seg.crop_source == "seg_lv" and without.crop_source == "motion"
    for result in (with_seg, without):
        assert result.ed.shape == (192, 192, 16) and result.ed.dtype == np.uint8
        np.testing.assert_allclose(np.linalg.norm(result.affine[:3, :3], axis=0), (1, 1, 10))
    # the motion crop is heart-centred: shifted from the LV-centred one, yet the whole LV
    # (every LV voxel of the mask) still lies inside its 192 x 192 window
    shift = np.linalg.norm(without.affine[:3, 3] - with_seg.affine[:3, 3])
    xs, ys, _ = np.nonzero(with_seg.ed_seg == 1)
    lv_extent = np.hypot(xs - 95.5, ys - 95.5).max()
    assert shift > 0 and shift + lv_extent < 96, (shift, lv_extent)
    assert without.ed_seg is None
