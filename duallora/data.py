"""Harmonized cohort -> tensors for the model (see docs/INTERNALS.md).

A harmonized cohort (``python -m data_prep harmonize``) is a folder with ``metadata.csv`` and
192 x 192 x 16 uint8 volumes at 1 x 1 x 10 mm. Model presets may want a smaller field of view
(``crop_size`` mm, centred: the LV sits in the middle) and a smaller grid (``image_size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from duallora.errors import KitError

HARMONIZED_SHAPE = (192, 192, 16)
REQUIRED_COLUMNS = (
    "subject_id", "dataset", "vendor", "centre", "scanner", "field_strength", "pathology",
    "label", "split", "split_official", "ed_frame", "es_frame", "ed_path", "es_path",
    "ed_seg_path", "es_seg_path", "crop_source", "source_cine",
)
TEXT_COLUMNS = ("centre", "scanner", "field_strength", "ed_seg_path", "es_seg_path",
                "source_cine", "crop_source")


def read_metadata(root: str | Path) -> pd.DataFrame:
    """``root/metadata.csv`` with its columns checked; a ``KitError`` names the file otherwise."""
    path = Path(root) / "metadata.csv"
    if not path.is_file():
        raise KitError(f"{path}: not found (run `python -m data_prep harmonize` first)")
    try:
        frame = pd.read_csv(path, dtype={"subject_id": str, "centre": str, "scanner": str,
                                         "field_strength": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise KitError(f"{path}: unreadable CSV ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise KitError(f"{path}: missing columns {', '.join(missing)}")
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].fillna("").astype(str)
    check_hand_edits(frame, path)
    bad_labels = ~frame["label"].isin([0, 1])
    if bad_labels.any():
        subject = frame.loc[bad_labels, "subject_id"].iloc[0]
        raise KitError(f"{path}: label must be 0 or 1 (subject {subject})")
    bad_split = ~frame["split"].isin(["train", "val", "test"])
    if bad_split.any():
        subject = frame.loc[bad_split, "subject_id"].iloc[0]
        raise KitError(f"{path}: split must be train, val or test (subject {subject})")
    frame["label"] = frame["label"].astype(int)
    return frame


def _line(frame: pd.DataFrame, mask: pd.Series) -> str:
    """The first offending row as ``line N (subject S)``: line 1 is the header."""
    index = int(np.flatnonzero(mask.to_numpy())[0])
    return f"line {index + 2} (subject {frame['subject_id'].iloc[index]})"


def check_hand_edits(frame: pd.DataFrame, path: Path) -> None:
    """What harmonize never writes, so a hand-edited or merged folder fails clearly: a subject
    twice (it would be trained on twice, or sit in two splits) and a vendor outside the kit's
    vocabulary (it would silently become a fifth client)."""
    from data_prep.conventions import VENDORS

    duplicated = frame["subject_id"].duplicated(keep="first")
    if duplicated.any():
        raise KitError(f"{path}: {_line(frame, duplicated)} repeats a subject_id already "
                       "listed; each subject may appear once")
    unknown = ~frame["vendor"].isin(VENDORS)
    if unknown.any():
        vendor = frame.loc[unknown, "vendor"].iloc[0]
        raise KitError(f"{path}: {_line(frame, unknown)} has unknown vendor {vendor!r} "
                       f"(expected one of {', '.join(VENDORS)})")


def _load_image(path: Path, subject: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A 3D volume and its voxel size (mm); a ``KitError`` names the file and subject otherwise."""
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for damaged files
        raise KitError(f"{path}: unreadable volume of subject {subject} ({err})") from err
    if data.ndim != 3:
        raise KitError(f"{path}: expected a 3D volume for subject {subject}, got {data.shape}")
    return data, tuple(float(z) for z in image.header.get_zooms()[:3])


def _load_volume(path: Path, subject: str) -> np.ndarray:
    return _load_image(path, subject)[0]


def _to_unit(data: np.ndarray) -> np.ndarray:
    """uint8 (x255) volumes -> [0, 1]; float volumes are taken as already scaled."""
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / 255.0
    return np.clip(data.astype(np.float32), 0.0, 1.0)


def centre_crop(volume: np.ndarray, crop_size: int) -> np.ndarray:
    """Keep the central ``crop_size`` x ``crop_size`` in-plane window (zero-padded if larger)."""
    h, w = volume.shape[:2]
    out = np.zeros((crop_size, crop_size, *volume.shape[2:]), dtype=volume.dtype)
    oh, ow = (h - crop_size) // 2, (w - crop_size) // 2
    src_h = slice(max(oh, 0), max(oh, 0) + min(h, crop_size))
    src_w = slice(max(ow, 0), max(ow, 0) + min(w, crop_size))
    dst_h = slice(max(-oh, 0), max(-oh, 0) + min(h, crop_size))
    dst_w = slice(max(-ow, 0), max(-ow, 0) + min(w, crop_size))
    out[dst_h, dst_w] = volume[src_h, src_w]
    return out


def resize(frames: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """Trilinear resize of (C, H, W, D) to (C, *image_size); a no-op when already that size."""
    size = tuple(int(s) for s in image_size)
    if frames.shape[1:] == size:
        return frames
    tensor = torch.from_numpy(np.ascontiguousarray(frames))[None]
    out = F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)
    return out[0].numpy()


def load_pair(root: str | Path, row: pd.Series | dict, image_size: Sequence[int],
              crop_size: int = 192) -> np.ndarray:
    """ED and ES of one subject as float32 ``(2, H, W, D)`` in [0, 1]."""
    root = Path(root)
    subject = str(row["subject_id"])
    frames = []
    for key in ("ed_path", "es_path"):
        volume = _to_unit(_load_volume(root / str(row[key]), subject))
        frames.append(centre_crop(volume, int(crop_size)))
    return resize(np.stack(frames), image_size).astype(np.float32)


def load_cohort_arrays(root: str | Path, image_size: Sequence[int],
                       crop_size: int = 192, progress: bool = False
                       ) -> tuple[torch.Tensor, pd.DataFrame]:
    """Every subject of a harmonized cohort: ``(x (N, 2, H, W, D), metadata)`` in row order."""
    frame = read_metadata(root)
    rows = tqdm(list(frame.iterrows()), desc="load cohort", unit="subject", disable=not progress)
    arrays = [load_pair(root, row, image_size, crop_size) for _, row in rows]
    if not arrays:
        raise KitError(f"{Path(root) / 'metadata.csv'}: holds no subjects")
    return torch.from_numpy(np.stack(arrays)), frame


def pad_depth(volume: np.ndarray, depth: int = HARMONIZED_SHAPE[2]) -> np.ndarray:
    """Pad (evenly, zeros) or centre-crop the slice axis to ``depth``, as harmonization does."""
    n = volume.shape[2]
    if n >= depth:
        start = (n - depth) // 2
        return volume[:, :, start:start + depth]
    before = (depth - n) // 2
    return np.pad(volume, ((0, 0), (0, 0), (before, depth - n - before)))


def load_real_sample(directory: str | Path) -> torch.Tensor:
    """A preprocessed real sample (``sax_ed.nii.gz`` + ``sax_es.nii.gz``) as (2, 192, 192, 16)."""
    directory = Path(directory)
    frames = []
    for name in ("sax_ed.nii.gz", "sax_es.nii.gz"):
        path = directory / name
        if not path.is_file():
            raise KitError(f"{path}: missing real sample file")
        volume = _to_unit(_load_volume(path, directory.name))
        if volume.shape[:2] != HARMONIZED_SHAPE[:2]:
            raise KitError(f"{path}: expected 192 x 192 slices, got {volume.shape[:2]}")
        frames.append(pad_depth(volume))
    return torch.from_numpy(np.stack(frames))


# Label values of harmonized segmentations (data_prep.conventions: 1 LV cavity, 2 myocardium,
# 3 RV cavity), repeated here so the model side does not import the data-prep package.
SEGMENT_LABELS = {"lv": 1, "myo": 2, "rv": 3}
MEASURE_NAMES = ("lv_ed_ml", "myo_ed_ml", "rv_ed_ml", "lv_es_ml", "myo_es_ml", "rv_es_ml",
                 "lv_ef", "rv_ef")


def _segment_volumes_ml(path: Path, subject: str) -> list[float]:
    """LV, MYO and RV volumes (mL) of one harmonized segmentation."""
    if not path.is_file():
        raise KitError(f"{path}: missing segmentation of subject {subject}")
    labels, voxel_mm = _load_image(path, subject)
    voxel_ml = float(np.prod(voxel_mm)) / 1000.0
    return [float((labels == value).sum()) * voxel_ml for value in SEGMENT_LABELS.values()]


def cardiac_measures(root: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Cavity and myocardium volumes (mL) at ED and ES plus LV/RV ejection fractions, one row
    per metadata row, read from the harmonized segmentations.

    Why: they are the anatomy a cardiac foundation model should encode, continuous and exact on
    phantoms, so a probe of them is far more sensitive than a NOR-vs-disease label on a small
    cohort. Subjects without segmentations (M&Ms "Unlabeled") get a row of NaN.
    """
    root = Path(root)
    rows = []
    for _, row in frame.iterrows():
        if not row["ed_seg_path"] or not row["es_seg_path"]:
            rows.append([np.nan] * len(MEASURE_NAMES))
            continue
        ed = _segment_volumes_ml(root / row["ed_seg_path"], row["subject_id"])
        es = _segment_volumes_ml(root / row["es_seg_path"], row["subject_id"])
        ejection = [1.0 - es[i] / ed[i] if ed[i] > 0 else np.nan for i in (0, 2)]
        rows.append(ed + es + ejection)
    return pd.DataFrame(rows, columns=list(MEASURE_NAMES), index=frame.index)
