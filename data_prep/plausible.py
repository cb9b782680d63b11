"""What a short-axis cine stack can plausibly look like, checked from the NIfTI header alone.

A NIfTI header says how much data follows; nibabel allocates that much before reading a byte
of it, so a 78-byte ``.nii.gz`` claiming 13 GB used to take 13 GB of memory. Every raw file is
checked here against these ranges *before* its data is read, and a file outside them is a
skipped subject with the reason. The ranges are generous (a factor of about two beyond the
published protocols) but finite; docs/DATA.md lists them with their sources:

- in-plane pixel size: ACDC 1.37-1.68 mm (Bernard et al., IEEE TMI 2018); M&Ms and M&Ms-2
  about 0.7-1.5 mm (Campello et al., IEEE TMI 2021; Martin-Isla et al., IEEE JBHI 2023); SCMR
  standardized cine protocols 1.5-2.5 mm (Kramer et al., JCMR 2020). Accepted: 0.4-4 mm.
- slice spacing (thickness + gap): ACDC 5-10 mm; SCMR 6-8 mm slices with 2-4 mm gaps
  (8-12 mm). Accepted: 2-20 mm.
- in-plane matrix: the datasets store 154-512 pixels a side. Accepted: 16-1024.
- slices: a base-to-apex stack of a ~90 mm left ventricle at <= 10 mm spacing has 8 or more;
  the datasets hold about 6-18. Accepted: 4-64 (fewer cannot be a short-axis cine stack).
- frames of a 4D cine: ACDC 12-35, M&Ms 20-40, SCMR 20-30 or more. Accepted: 2-100 (two are
  the least that hold an ED and a different ES).
- total voxels of one file: at most 2**28 (268 M, 1 GiB as float32): a 512 x 512 x 20-slice,
  50-frame cine still fits, a header claiming gigabytes does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from duallora.errors import KitError


@dataclass(frozen=True)
class Span:
    """An accepted closed interval and its unit, for messages and docs/DATA.md."""

    lo: float
    hi: float
    unit: str = ""

    def holds(self, value: float) -> bool:
        return bool(np.isfinite(value)) and self.lo <= value <= self.hi

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.lo:g}-{self.hi:g}{unit}"


IN_PLANE_MM = Span(0.4, 4.0, "mm")
SLICE_SPACING_MM = Span(2.0, 20.0, "mm")
MATRIX = Span(16, 1024, "pixels")
SLICES = Span(4, 64)
FRAMES = Span(2, 100)
MAX_VOXELS = 2**28
# NIfTI data types that can hold an image or a label map (no complex, RGB or void)
NUMERIC_KINDS = "biuf"


def check_header(path: str, shape: Sequence[int], dtype: np.dtype, affine: np.ndarray,
                 ndim: Sequence[int]) -> None:
    """Raise ``KitError`` naming ``path`` unless the header describes a plausible cine stack.

    ``ndim``: the dimensions the caller accepts (3: one frame, 4: a cine; a trailing axis of
    one is a 3D volume). Only the header is used: nothing here reads or allocates the data.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 4 and shape[3] == 1 and 3 in ndim:
        shape = shape[:3]
    if len(shape) not in ndim:
        raise KitError(f"{path}: has {len(shape)} dimensions {shape}, expected "
                       f"{' or '.join(map(str, ndim))}D")
    if np.dtype(dtype).kind not in NUMERIC_KINDS:
        raise KitError(f"{path}: data type {np.dtype(dtype)} cannot be an image")
    voxels = int(np.prod(shape, dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise KitError(f"{path}: header claims {shape} = {voxels:,} voxels, more than any cine "
                       f"stack ({MAX_VOXELS:,}); not read")
    for axis, what in ((0, "rows"), (1, "columns")):
        if not MATRIX.holds(shape[axis]):
            raise KitError(f"{path}: {shape[axis]} {what}, outside the plausible {MATRIX}")
    if not SLICES.holds(shape[2]):
        raise KitError(f"{path}: {shape[2]} slices, outside the plausible {SLICES} of a "
                       "short-axis stack")
    if len(shape) == 4 and not FRAMES.holds(shape[3]):
        raise KitError(f"{path}: {shape[3]} frames, outside the plausible {FRAMES} of a cine")
    check_raw_pixdim(path)
    check_voxel_size(path, affine)


def check_raw_pixdim(path: str) -> None:
    """Refuse a voxel size of zero or less written in the header.

    nibabel "repairs" ``pixdim`` of 0 to 1 mm when it loads a file (with only a log line), so
    a header saying "0 mm" would pass as 1 mm. The raw header is read again unrepaired; it
    matters only when no ``sform`` gives the affine (qform and the fallback scale by pixdim).
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(path) as handle:
            raw = nib.Nifti1Header.from_fileobj(handle, check=False)
        sform_code = int(raw["sform_code"])
        pixdim = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except Exception:  # not NIfTI-1 (e.g. NIfTI-2): nibabel's own affine is all there is
        return
    if sform_code == 0 and not (np.isfinite(pixdim).all() and (pixdim > 0).all()):
        raise KitError(f"{path}: voxel size {pixdim.tolist()} mm in the header (pixdim); "
                       "every size must be positive")


def check_voxel_size(path: str, affine: np.ndarray) -> None:
    """Voxel size from the affine's column norms (as harmonization resamples with it)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() \
            or np.linalg.matrix_rank(affine[:3, :3]) < 3:
        raise KitError(f"{path}: degenerate affine")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    for value in zooms[:2]:
        if not IN_PLANE_MM.holds(value):
            raise KitError(f"{path}: in-plane pixel size {value:.3g} mm, outside the plausible "
                           f"{IN_PLANE_MM}")
    if not SLICE_SPACING_MM.holds(zooms[2]):
        raise KitError(f"{path}: slice spacing {zooms[2]:.3g} mm, outside the plausible "
                       f"{SLICE_SPACING_MM}")


def check_cine_pair(ed: np.ndarray, es: np.ndarray, source: str) -> None:
    """ED and ES must be two different, non-empty frames: a constant frame carries no image,
    and an ES identical to ED (the same frame twice) has no contraction to classify."""
    for name, frame in (("ED", ed), ("ES", es)):
        if float(frame.max()) == float(frame.min()):
            raise KitError(f"{source}: the {name} frame is empty (every voxel "
                           f"{float(frame.min()):g})")
    if np.array_equal(ed, es):
        raise KitError(f"{source}: ES is identical to ED (the same frame twice)")
