"""The geometric and intensity steps that turn one subject's raw ED/ES into model input.

Order: resample to 1 x 1 x 10 mm (MONAI ``Spacing``: linear for images, nearest for masks), find
the crop centre, crop/pad to 192 x 192 x 16, clip intensities at per-subject percentiles and
scale to [0, 1]. Resampling happens in the voxel grid of the short-axis stack (the affine only
provides voxel sizes), so oblique stacks stay short-axis instead of being rotated to scanner axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Spacing
from scipy import ndimage

from data_prep.conventions import LV
from data_prep.volumes import Frames

TARGET_SPACING = (1.0, 1.0, 10.0)
TARGET_SHAPE = (192, 192, 16)
PERCENTILES = (0.5, 99.5)

_SPACING_IMAGE = Spacing(pixdim=TARGET_SPACING, mode="bilinear", padding_mode="border")
_SPACING_MASK = Spacing(pixdim=TARGET_SPACING, mode="nearest", padding_mode="zeros")


@dataclass
class Harmonized:
    ed: np.ndarray  # uint8 (192, 192, 16), intensity x 255
    es: np.ndarray
    ed_seg: np.ndarray | None  # uint8, labels 1 LV 2 MYO 3 RV
    es_seg: np.ndarray | None
    affine: np.ndarray
    crop_source: str


def resample(*volumes: np.ndarray, zooms: np.ndarray, mask: bool) -> list[np.ndarray]:
    """Resample 3D arrays of one grid (voxel size ``zooms``, mm) to ``TARGET_SPACING``.

    The volumes go through as the channels of one image: the sampling grid, most of the cost,
    is computed once, and each channel is sampled on its own, so every output is value for
    value what resampling that volume alone gives.
    """
    stacked = np.stack([np.asarray(v, dtype=np.float32) for v in volumes])
    tensor = MetaTensor(torch.from_numpy(stacked), affine=torch.from_numpy(np.diag([*zooms, 1.0])))
    out = (_SPACING_MASK if mask else _SPACING_IMAGE)(tensor).as_tensor().numpy()
    return [np.rint(channel).astype(np.uint8) if mask else channel for channel in out]


def _motion_centre(ed: np.ndarray, es: np.ndarray) -> tuple[float, float, float] | None:
    """Fallback crop centre without a mask: the centre of what moves between ED and ES.

    Only the heart (both ventricles, the atria at the base) changes much between the two
    phases, so the centroid of the strongest smoothed |ED - ES| is the heart's centre. It lies
    between the LV and the RV, a few centimetres from the LV centre: the 192 mm crop still holds
    the whole heart, but it is heart-centred rather than LV-centred (``crop_source=motion``).
    """
    diff = ndimage.gaussian_filter(np.abs(ed - es), sigma=(6, 6, 0.5))
    if not np.isfinite(diff).all() or diff.max() <= 0:
        return None
    strong = diff >= 0.5 * diff.max()
    return tuple(float(c) for c in ndimage.center_of_mass(diff * strong))  # type: ignore[return-value]


def find_crop_centre(ed: np.ndarray, es: np.ndarray,
                     ed_seg: np.ndarray | None) -> tuple[tuple[float, float, float], str]:
    """Crop centre (voxel coordinates) and how it was found: ``seg_lv``, ``motion``, ``centre``."""
    if ed_seg is not None and (ed_seg == LV).any():
        return tuple(float(c) for c in ndimage.center_of_mass(ed_seg == LV)), "seg_lv"  # type: ignore[return-value]
    centre = _motion_centre(ed, es)
    if centre is not None:
        return centre, "motion"
    return tuple((s - 1) / 2 for s in ed.shape), "centre"  # type: ignore[return-value]


def crop_or_pad(volume: np.ndarray, centre: tuple[float, float, float],
                shape: tuple[int, int, int] = TARGET_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Window of ``shape`` centred on ``centre`` (zero outside the volume) and its start index.

    When the stack has fewer slices than ``shape[2]`` it is padded evenly on both sides instead
    of following the centre, so short stacks stay whole.
    """
    starts = []
    for axis, size in enumerate(shape):
        if axis == 2 and volume.shape[2] <= size:
            starts.append(-((size - volume.shape[2]) // 2))
        else:
            starts.append(int(round(centre[axis] - (size - 1) / 2)))
    out = np.zeros(shape, dtype=volume.dtype)
    src, dst = [], []
    for start, size, length in zip(starts, shape, volume.shape, strict=True):
        lo, hi = max(start, 0), min(start + size, length)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - start, lo - start + max(0, hi - lo)))
    out[tuple(dst)] = volume[tuple(src)]
    return out, np.array(starts)


def scale_intensities(ed: np.ndarray, es: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip both phases at the same per-subject percentiles and scale to uint8 (x 255).

    Sharing the window keeps ED and ES comparable; percentiles ignore the zero padding.
    """
    values = np.concatenate([ed.ravel(), es.ravel()])
    values = values[values > 0] if (values > 0).any() else values
    lo, hi = np.percentile(values, PERCENTILES)
    scale = max(float(hi - lo), 1e-6)

    def to_uint8(volume: np.ndarray) -> np.ndarray:
        return np.rint(np.clip((volume - lo) / scale, 0.0, 1.0) * 255).astype(np.uint8)

    return to_uint8(ed), to_uint8(es)


def output_affine(source_affine: np.ndarray, start: np.ndarray,
                  zooms: np.ndarray) -> np.ndarray:
    """1 x 1 x 10 mm affine keeping the stack's (orthonormalised) orientation and position."""
    u, _, vt = np.linalg.svd(source_affine[:3, :3] / zooms)
    rotation = u @ vt
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array(TARGET_SPACING)
    affine[:3, 3] = source_affine[:3, 3] + rotation @ (start * np.array(TARGET_SPACING))
    return affine


def harmonize_frames(frames: Frames) -> Harmonized:
    """Resample, centre on the LV, crop/pad and scale one subject's ED/ES (and masks)."""
    zooms = frames.zooms
    ed, es = resample(frames.ed, frames.es, zooms=zooms, mask=False)
    masks = [m for m in (frames.ed_seg, frames.es_seg) if m is not None]
    resampled = iter(resample(*masks, zooms=zooms, mask=True) if masks else [])
    ed_seg, es_seg = (None if m is None else next(resampled)
                      for m in (frames.ed_seg, frames.es_seg))
    centre, source = find_crop_centre(ed, es, ed_seg)
    ed_c, start = crop_or_pad(ed, centre)
    es_c, _ = crop_or_pad(es, centre)
    ed_u8, es_u8 = scale_intensities(ed_c, es_c)
    seg = [crop_or_pad(s, centre)[0] if s is not None else None for s in (ed_seg, es_seg)]
    return Harmonized(ed_u8, es_u8, seg[0], seg[1],
                      output_affine(frames.affine, start, zooms), source)
