"""Every frame of one rendered cine as model input, plus per-slice anatomy areas.

The pretraining population must look exactly like what fine-tuning feeds the model, so each
frame goes through the very steps of ``preprocess.harmonize_frames`` (ED/ES) and then of
``duallora.data.load_pair``:

1. resample every frame to 1 x 1 x 10 mm in one ``preprocess.resample`` call (the frames are
   its channels; each channel is sampled on its own, so ED and ES come out value for value as
   the ED/ES-only harmonization gives them), masks likewise with nearest neighbour;
2. crop/pad 192 x 192 x 16 around the centre ``find_crop_centre`` takes from ED and its LV mask;
3. one percentile intensity window for the subject, as ``scale_intensities`` does for ED and
   ES, but over *all* frames (so every frame of a cine shares one scale), then uint8;
4. ``_to_unit``, ``centre_crop(crop_size)`` and ``resize(image_size)`` as ``load_pair`` does.

The window over all frames is the one deliberate difference to the ED/ES cohorts: a cine's
mid-systolic frames hold intensities ED and ES do not, so the 0.5/99.5 percentiles move a little.
``window_frames`` lets a test pick ED and ES instead and check everything else is identical.

The masks follow the geometric steps with nearest neighbour and give per-slice voxel counts of
LV (1), MYO (2) and RV (3) on the model-input grid: anatomy targets from the generator's masks,
never disease labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data_prep.conventions import LV, MYO, RV
from data_prep.preprocess import PERCENTILES, crop_or_pad, find_crop_centre, resample
from duallora.data import _to_unit, centre_crop, resize

AREA_LABELS = (LV, MYO, RV)


@dataclass(frozen=True)
class CineFrames:
    """One subject's frames on the model-input grid."""

    frames: np.ndarray  # uint8 (T, H, W, D), model input x 255
    areas: np.ndarray  # int16 (T, 3, D): LV, MYO, RV voxels per slice
    crop_source: str  # how the crop centre was found (seg_lv, motion, centre)


def intensity_window(volumes: Sequence[np.ndarray]) -> tuple[float, float]:
    """``scale_intensities``'s percentile window, over any number of volumes."""
    values = np.concatenate([v.ravel() for v in volumes])
    values = values[values > 0] if (values > 0).any() else values
    lo, hi = np.percentile(values, PERCENTILES)
    return float(lo), max(float(hi - lo), 1e-6)


def to_uint8(volume: np.ndarray, lo: float, scale: float) -> np.ndarray:
    """The harmonized uint8 volume, by ``scale_intensities``'s formula."""
    return np.rint(np.clip((volume - lo) / scale, 0.0, 1.0) * 255).astype(np.uint8)


def resize_masks(masks: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of (T, H, W, D) label maps (pixel centres, like trilinear's
    ``align_corners=False``); a no-op when already that size."""
    size = tuple(int(s) for s in image_size)
    if masks.shape[1:] == size:
        return masks
    tensor = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))[None]
    return F.interpolate(tensor, size=size, mode="nearest-exact")[0].numpy()


def slice_areas(masks: np.ndarray) -> np.ndarray:
    """(T, H, W, D) label maps -> int16 (T, 3, D) voxel counts of LV, MYO, RV per slice.

    int16 halves the file; a count above its range (only possible on a plane over 181 x 181
    voxels) is refused rather than wrapped.
    """
    counts = np.stack([(masks == value).sum(axis=(1, 2)) for value in AREA_LABELS], axis=1)
    if counts.size and counts.max() > np.iinfo(np.int16).max:
        raise ValueError(f"a per-slice area of {counts.max()} voxels does not fit int16")
    return counts.astype(np.int16)


def cine_to_model_input(cine: np.ndarray, labels: np.ndarray, zooms: np.ndarray, ed: int,
                        es: int, image_size: Sequence[int], crop_size: int,
                        window_frames: Sequence[int] | None = None) -> CineFrames:
    """``cine`` (X, Y, Z, T) and its ``labels`` (same shape) -> every frame as model input.

    ``zooms`` is the voxel size (mm); ``ed``/``es`` index the cine; ``window_frames`` (default:
    every frame) are the frames the intensity window is taken over.
    """
    n = cine.shape[-1]
    images = resample(*(cine[..., t] for t in range(n)), zooms=zooms, mask=False)
    masks = resample(*(labels[..., t] for t in range(n)), zooms=zooms, mask=True)
    centre, source = find_crop_centre(images[ed], images[es], masks[ed])
    cropped = [crop_or_pad(v, centre)[0] for v in images]
    del images
    picked = range(n) if window_frames is None else window_frames
    lo, scale = intensity_window([cropped[t] for t in picked])
    units = np.stack([centre_crop(_to_unit(to_uint8(v, lo, scale)), int(crop_size))
                      for v in cropped])
    del cropped
    frames = np.rint(resize(units, image_size) * 255).astype(np.uint8)
    grid = np.stack([centre_crop(crop_or_pad(m, centre)[0], int(crop_size)) for m in masks])
    return CineFrames(frames, slice_areas(resize_masks(grid, image_size)), source)
