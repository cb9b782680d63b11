"""duallora.data: metadata validation, pairs, cohort tensors, and the real samples."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from duallora.data import (
    MEASURE_NAMES,
    cardiac_measures,
    load_cohort_arrays,
    load_pair,
    load_real_sample,
    read_metadata,
)
from duallora.errors import KitError


def test_read_metadata_names_the_file_on_bad_columns(harmonized_dir: Path,
                                                     tmp_path: Path) -> None:
    meta = pd.read_csv(harmonized_dir / "metadata.csv")
    meta.drop(columns=["split"]).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(KitError, match=r"metadata\.csv: missing columns split"):
        read_metadata(tmp_path)
    with pytest.raises(KitError, match="not found"):
        read_metadata(tmp_path / "nowhere")
    meta.assign(label=7).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(KitError, match="label must be 0 or 1"):
        read_metadata(tmp_path)


def test_load_pair_crops_the_centre_and_resizes(harmonized_dir: Path) -> None:
    meta = read_metadata(harmonized_dir)
    row = meta.iloc[0]
    full = load_pair(harmonized_dir, row, image_size=(192, 192, 16))
    raw = np.asarray(nib.load(str(harmonized_dir / row["ed_path"])).dataobj)
    np.testing.assert_allclose(full[0], raw / 255.0, atol=1e-6)
    small = load_pair(harmonized_dir, row, image_size=(64, 64, 16), crop_size=128)
    assert small.shape == (2, 64, 64, 16) and small.dtype == np.float32
    assert small.min() >= 0.0 and small.max() <= 1.0
    # a 128 mm centre crop halved in-plane equals the 2x2 block mean of the same window
    window = full[:, 32:160, 32:160, :]
    pooled = window.reshape(2, 64, 2, 64, 2, 16).mean(axis=(2, 4))
    np.testing.assert_allclose(small, pooled, atol=1e-5)


def test_load_cohort_arrays_stacks_every_subject(harmonized_dir: Path) -> None:
    x, frame = load_cohort_arrays(harmonized_dir, image_size=(32, 32, 8), crop_size=96)
    assert x.shape == (len(frame), 2, 32, 32, 8) and x.dtype == torch.float32
    # the LV blood pool sits in the middle: the centre is brighter than the crop's mean at ED
    assert (x[:, 0, 14:18, 14:18, :].mean() > x[:, 0].mean()).item()


@pytest.mark.needs_shared
@pytest.mark.parametrize("dataset,n_slices", [("acdc", 10), ("mnms", 14), ("mnms2", 12)])
def test_real_samples_pad_to_16_slices(real_samples_dir: Path, harmonized_dir: Path,
                                       dataset: str, n_slices: int) -> None:
    sample = load_real_sample(real_samples_dir / dataset)
    assert sample.shape == (2, 192, 192, 16) and sample.dtype == torch.float32
    ed = np.asarray(nib.load(str(real_samples_dir / dataset / "sax_ed.nii.gz")).dataobj)
    assert ed.shape[2] == n_slices
    before = (16 - n_slices) // 2
    np.testing.assert_allclose(sample[0, :, :, before:before + n_slices].numpy(), ed / 255.0)
    assert sample[:, :, :, :before].abs().sum() == 0 and sample[:, :, :, before + n_slices:]\
        .abs().sum() == 0
    # same layout, dtype and range as a harmonized phantom pair: one model takes both
    phantom = load_pair(harmonized_dir, read_metadata(harmonized_dir).iloc[0], (192, 192, 16))
    assert tuple(sample.shape) == phantom.shape and sample.max() <= 1.0
    batch = torch.stack([sample, torch.from_numpy(phantom)])
    assert batch.shape == (2, 2, 192, 192, 16)


def test_cardiac_measures_count_segmented_voxels(harmonized_dir: Path, tmp_path: Path) -> None:
    frame = read_metadata(harmonized_dir)
    measures = cardiac_measures(harmonized_dir, frame)
    assert list(measures.columns) == list(MEASURE_NAMES) and len(measures) == len(frame)
    has_seg = frame["ed_seg_path"] != ""
    assert measures[has_seg].notna().all().all()
    assert measures[~has_seg].isna().all().all()
    row = frame[has_seg].iloc[0]
    seg = nib.load(str(harmonized_dir / row["es_seg_path"]))
    voxel_ml = float(np.prod(seg.header.get_zooms()[:3])) / 1000.0
    expected_rv = float((np.asarray(seg.dataobj) == 3).sum()) * voxel_ml
    assert measures.loc[row.name, "rv_es_ml"] == pytest.approx(expected_rv)
    first = measures.loc[row.name]
    assert first["lv_ef"] == pytest.approx(1 - first["lv_es_ml"] / first["lv_ed_ml"])
    # every phantom heart contracts: the LV and RV cavities shrink from ED to ES
    labelled = measures[has_seg]
    assert ((labelled["lv_ef"] > 0) & (labelled["lv_ef"] < 1) & (labelled["rv_ef"] > 0)).all()

    broken = frame[has_seg].head(1).copy()
    broken["es_seg_path"] = "volumes/nowhere/es_seg.nii.gz"
    with pytest.raises(KitError, match=f"nowhere.*{broken['subject_id'].iloc[0]}"):
        cardiac_measures(harmonized_dir, broken)
