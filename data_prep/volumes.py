"""Opening raw NIfTI files defensively and pulling the ED / ES frames out of them.

Every failure becomes a ``KitError`` whose message starts with the offending file, so the
harmonize run can put it in ``skipped.csv`` and carry on with the other subjects.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from data_prep.plausible import check_cine_pair, check_header
from data_prep.records import SubjectRecord
from duallora.errors import KitError


@dataclass
class Frames:
    """One subject's ED and ES volumes (3D, voxel grid of the source) and optional masks."""

    ed: np.ndarray
    es: np.ndarray
    ed_seg: np.ndarray | None
    es_seg: np.ndarray | None
    affine: np.ndarray

    @property
    def zooms(self) -> np.ndarray:
        """Voxel size in mm, from the affine's column norms.

        Column norms stay correct when the direction cosines are oblique or not orthonormal,
        where reading a rotation out of the affine would not.
        """
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def load_array(path: str | Path, ndim: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(data as float32, affine)``; unreadable, truncated or wrongly shaped files raise.

    The header is checked first (``plausible.check_header``): nibabel allocates what the header
    claims before reading, so an implausible claim must be refused before the data is touched.
    """
    try:
        image = nib.load(str(path))  # reads the header only
        header = (image.shape, image.get_data_dtype(), image.affine)
    except Exception as err:  # nibabel raises many types for damaged files
        raise KitError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err})") from err
    check_header(str(path), header[0], header[1], header[2], ndim)
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:
        raise KitError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err})") from err
    if data.ndim == 4 and 3 in ndim and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in ndim:
        raise KitError(f"{path}: has {data.ndim} dimensions {data.shape}, expected "
                       f"{' or '.join(map(str, ndim))}D")
    if not np.isfinite(data).all():
        raise KitError(f"{path}: contains NaN or infinite values")
    return data, np.asarray(image.affine, dtype=np.float64)


def _frame(cine: np.ndarray, index: int, path: str, what: str) -> np.ndarray:
    if cine.ndim != 4:
        raise KitError(f"{path}: expected a 4D cine, got shape {cine.shape}")
    if not 0 <= index < cine.shape[3]:
        raise KitError(f"{path}: {what} index {index} is outside the {cine.shape[3]} frames "
                       "(0-based)")
    return cine[..., index]


def _check_seg(seg: np.ndarray, image: np.ndarray, path: str, what: str) -> np.ndarray:
    if seg.shape != image.shape:
        raise KitError(f"{path}: {what} mask shape {seg.shape} differs from image {image.shape}")
    seg = np.rint(seg).astype(np.int16)
    if seg.min() < 0 or seg.max() > 3:
        raise KitError(f"{path}: {what} mask holds labels outside 0..3")
    if not seg.any():
        raise KitError(f"{path}: {what} mask is empty (wrong ED/ES index?)")
    return seg


def read_frames(record: SubjectRecord) -> Frames:
    """ED and ES images (and masks where present) of one subject, validated."""
    if record.ed_image:
        ed, affine = load_array(record.ed_image, (3,))
        es, _ = load_array(record.es_image, (3,))
        ed_seg = es_seg = None
        if record.ed_seg and record.es_seg:
            ed_seg = _check_seg(load_array(record.ed_seg, (3,))[0], ed, record.ed_seg, "ED")
            es_seg = _check_seg(load_array(record.es_seg, (3,))[0], es, record.es_seg, "ES")
    else:
        cine, affine = load_array(record.cine, (4,))
        ed = _frame(cine, record.ed_index, record.cine, "ED")
        es = _frame(cine, record.es_index, record.cine, "ES")
        ed_seg = es_seg = None
        if record.cine_seg:
            gt, _ = load_array(record.cine_seg, (4,))
            if gt.shape != cine.shape:
                raise KitError(f"{record.cine_seg}: shape {gt.shape} differs from the cine "
                               f"{cine.shape}")
            ed_seg = _check_seg(_frame(gt, record.ed_index, record.cine_seg, "ED"), ed,
                                record.cine_seg, "ED")
            es_seg = _check_seg(_frame(gt, record.es_index, record.cine_seg, "ES"), es,
                                record.cine_seg, "ES")
    if ed.shape != es.shape:
        raise KitError(f"{record.source_path}: ED shape {ed.shape} differs from ES {es.shape}")
    if min(ed.shape[:2]) < 16:
        raise KitError(f"{record.source_path}: in-plane matrix {ed.shape[:2]} is too small")
    check_cine_pair(ed, es, record.source_path)
    return Frames(ed, es, ed_seg, es_seg, affine)


def save_nifti_atomic(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write next to the target, then rename: a crash never leaves a half-written volume."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.nii.gz")
    os.close(fd)
    try:
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
