"""Per-subject nuisance and vendor-appearance strength of the v2 generator.

Real cine stacks vary in ways that harmonization (1 x 1 x 10 mm resampling, a crop on the ED LV
centroid, a per-subject intensity window) does not remove, and that make raw pixels a poorer
read-out of the heart than the phantoms used to be (issue 38). Each subject draws, from its own
random stream (``[latent seed, 3]``, so nothing else the renderer draws moves):

- ``tilt_deg`` / azimuth: the LV long axis leans against the stack normal (short-axis planning
  error), so every slice's heart sits a little further along one in-plane direction;
- ``rotation_deg``: the heart's in-plane orientation (where the RV lies) beyond the vendor's;
- ``fat_scale``: thickness of the bright epicardial fat around the ventricles;
- ``snr_scale`` and ``bias_extra``: noise level and coil shading of this subject's scan.

Ranges live in ``shifts.toml`` ``[nuis]`` (sources in docs/PHANTOMS.md); strength 0 gives every
subject the reference values, which the renderer applies as exact no-ops.

``appearance_style`` blends a vendor's scanner style towards the reference vendor's: the
``app`` strength. At 0 every vendor scans alike (the negative-control cell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from data_prep.phantoms.appearance import STYLES, VendorStyle

REFERENCE_VENDOR = "Siemens"  # the style every vendor takes at appearance strength 0
NUISANCE_STREAM = 3  # random stream of the latent seed (1: rendering, 2: not used here)


@dataclass(frozen=True)
class SubjectNuisance:
    tilt_deg: float = 0.0
    tilt_azimuth: float = 0.0  # rad, in-plane direction the axis leans towards
    rotation_deg: float = 0.0
    fat_scale: float = 1.0
    snr_scale: float = 1.0
    bias_extra: float = 0.0


NO_NUISANCE = SubjectNuisance()


def draw_nuisance(ranges: dict[str, tuple[float, float]], latent_seed: int) -> SubjectNuisance:
    """One subject's nuisance, drawn in a fixed order whatever the ranges (stable streams)."""
    if not ranges:
        return NO_NUISANCE
    rng = np.random.default_rng([latent_seed, NUISANCE_STREAM])

    def uniform(name: str, default: float) -> float:
        draw = float(rng.random())
        lo, hi = ranges.get(name, (default, default))
        return lo + draw * (hi - lo)

    tilt = uniform("tilt_deg", 0.0)
    azimuth = float(rng.uniform(0.0, 2 * math.pi))
    return SubjectNuisance(tilt_deg=tilt, tilt_azimuth=azimuth,
                           rotation_deg=uniform("rotation_deg", 0.0),
                           fat_scale=uniform("fat_scale", 1.0),
                           snr_scale=uniform("snr_scale", 1.0),
                           bias_extra=uniform("bias_extra", 0.0))


def tilt_offsets(nuisance: SubjectNuisance, heights_mm: np.ndarray, pivot_mm: float,
                 spacing: float) -> np.ndarray:
    """Whole-pixel in-plane offsets (n_slices, 2) of a leaning long axis.

    A slice at height ``u`` above the apex sees the axis displaced by
    ``(u - pivot) * tan(tilt)`` along the azimuth; the pivot (mid-ventricle) stays put, so the
    crop on the LV centroid keeps the heart centred overall and the lean remains.
    """
    shift_mm = (heights_mm - pivot_mm) * math.tan(math.radians(nuisance.tilt_deg))
    direction = np.array([math.cos(nuisance.tilt_azimuth), math.sin(nuisance.tilt_azimuth)])
    return np.rint(shift_mm[:, None] * direction[None, :] / spacing).astype(int)


def roll_slices(volume: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shift each slice (axis 2, every frame) of ``volume`` by its own whole-pixel offset."""
    for k, (dx, dy) in enumerate(offsets):
        if dx or dy:
            volume[:, :, k] = np.roll(volume[:, :, k], (int(dx), int(dy)), axis=(0, 1))
    return volume


def appearance_style(vendor: str, strength: float) -> VendorStyle:
    """``vendor``'s style blended towards the reference vendor's (1: its own, 0: reference).

    Numeric ranges are interpolated; discrete choices (matrices, field strengths, scanner
    names) are the vendor's own above 0 and the reference's at 0.
    """
    own = STYLES[vendor]
    if strength == 1.0:
        return own
    ref = STYLES[REFERENCE_VENDOR]
    values = {}
    for item in fields(VendorStyle):
        a, b = getattr(ref, item.name), getattr(own, item.name)
        if item.name in ("matrices", "field_strengths", "scanners"):
            values[item.name] = a if strength == 0.0 else b
        elif isinstance(a, tuple):
            values[item.name] = tuple(x + strength * (y - x) for x, y in zip(a, b, strict=True))
        else:
            values[item.name] = a + strength * (b - a)
    return replace(own, **values)


def scanner_noise(style: VendorStyle, nuisance: SubjectNuisance) -> VendorStyle:
    """The style with this subject's SNR factor and extra coil shading (exact no-op at ref)."""
    if nuisance.snr_scale == 1.0 and nuisance.bias_extra == 0.0:
        return style
    return replace(style, snr=(style.snr[0] * nuisance.snr_scale,
                               style.snr[1] * nuisance.snr_scale),
                   bias=style.bias + nuisance.bias_extra)
