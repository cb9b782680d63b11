"""Readers on phantom trees written in the real raw layouts: every dataset quirk."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from data_prep.conventions import acdc_to_unified, binary_label, normalize_vendor
from data_prep.readers import read_acdc, read_mnms, read_mnms2
from data_prep.readers.acdc import find_acdc_root, parse_info_cfg
from data_prep.readers.mnms import find_mnms_csv
from duallora.errors import KitError


def _data(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_vendor_spellings_map_to_the_four_clients() -> None:
    cases = {"A": "Siemens", "SIEMENS": "Siemens", "Philips Medical Systems": "Philips",
             "b": "Philips", "GE MEDICAL SYSTEMS": "GE", " C ": "GE", "D": "Canon",
             "Canon Medical Systems": "Canon", "TOSHIBA": "Canon"}
    for raw, vendor in cases.items():
        assert normalize_vendor(raw) == vendor
    with pytest.raises(KitError, match="unknown vendor 'Hitachi'"):
        normalize_vendor("Hitachi")


def test_acdc_labels_are_swapped_to_the_mnms_convention() -> None:
    acdc = np.array([0, 1, 2, 3])  # background, RV, MYO, LV
    assert acdc_to_unified(acdc).tolist() == [0, 3, 2, 1]  # -> background, RV=3, MYO=2, LV=1
    with pytest.raises(KitError):
        acdc_to_unified(np.array([0, 5]))
    assert binary_label("NOR") == 0 and binary_label("MINF") == 1 and binary_label("nor") == 0


def test_acdc_frames_are_one_based(phantom_raw_dir: Path) -> None:
    records, skips = read_acdc(phantom_raw_dir / "ACDC" / "database")
    assert records and not skips
    for record in records:
        cfg = parse_info_cfg(Path(record.ed_image).parent / "Info.cfg")
        assert record.ed_index == int(cfg["ED"]) - 1 and record.es_index == int(cfg["ES"]) - 1
        assert record.ed_image.endswith(f"_frame{int(cfg['ED']):02d}.nii.gz")
        cine = _data(record.cine)
        # the frame file named by the 1-based number is the cine's volume at index number - 1
        np.testing.assert_array_equal(_data(record.ed_image), cine[..., record.ed_index])
        np.testing.assert_array_equal(_data(record.es_image), cine[..., record.es_index])
        assert record.vendor == "Siemens" and record.subject_id.startswith("acdc/patient")
    splits = {r.split_official for r in records}
    assert splits == {"train", "test"}


def test_acdc_root_may_be_the_download_parent(phantom_raw_dir: Path) -> None:
    database = phantom_raw_dir / "ACDC" / "database"
    assert find_acdc_root(phantom_raw_dir / "ACDC") == database
    assert find_acdc_root(database) == database
    with pytest.raises(KitError, match="not an ACDC root"):
        find_acdc_root(phantom_raw_dir / "MnM2")


def test_acdc_missing_height_and_weight_are_fine(phantom_raw_dir: Path, tmp_path: Path) -> None:
    src = phantom_raw_dir / "ACDC" / "database" / "training"
    patient = sorted(p for p in src.iterdir() if p.is_dir())[0]
    root = tmp_path / "database"
    shutil.copytree(patient, root / "training" / patient.name)
    cfg = root / "training" / patient.name / "Info.cfg"
    lines = [ln for ln in cfg.read_text().splitlines() if not ln.startswith(("Height", "Weight"))]
    cfg.write_text("\n".join(lines) + "\n")
    records, skips = read_acdc(root)
    assert len(records) == 1 and not skips
    assert records[0].height is None and records[0].weight is None


def test_mnms_indices_are_zero_based_into_the_4d_files(phantom_raw_dir: Path) -> None:
    root = phantom_raw_dir / "MnM" / "OpenDataset"
    raw_table = pd.read_csv(find_mnms_csv(root))
    assert raw_table.columns[0].startswith("Unnamed")  # the real file's quirk is present
    records, skips = read_mnms(root)
    assert records and not skips
    assert len(records) == len(raw_table)
    for record in records:
        row = raw_table.loc[raw_table["External code"] == record.subject_id.split("/")[1]].iloc[0]
        assert (record.ed_index, record.es_index) == (row["ED"], row["ES"])
        assert record.vendor == normalize_vendor(row["Vendor"])
        if record.cine_seg:  # the 4D mask is labelled exactly at ED and ES
            labelled = np.flatnonzero(_data(record.cine_seg).any(axis=(0, 1, 2)))
            assert set(labelled) == {record.ed_index, record.es_index}
    assert {r.vendor for r in records} == {"Siemens", "Philips", "GE", "Canon"}


def test_mnms2_padding_rows_and_vendor_strings(phantom_raw_dir: Path) -> None:
    root = phantom_raw_dir / "MnM2"
    text = (root / "dataset_information.csv").read_text()
    assert text.rstrip("\n").endswith(",,,,")  # empty trailing rows, as in the real table
    records, skips = read_mnms2(root)
    folders = sorted(p.name for p in (root / "dataset").iterdir())
    assert not skips
    assert sorted(r.subject_id.split("/")[1] for r in records) == folders
    assert {r.vendor for r in records} <= {"Siemens", "Philips", "GE"}
    for record in records:
        assert record.ed_index == -1 and record.ed_image.endswith("_SA_ED.nii.gz")
        code = int(record.subject_id.split("/")[1])
        expected = "train" if code <= 160 else "val" if code <= 200 else "test"
        assert record.split_official == expected
