"""Acquisition shift: how each centre's protocol and scanner turn a latent heart into a scan.

On top of the vendor appearance of v1 (``appearance.STYLES``: matrix, contrast, noise, bias,
intensity range), every scan follows its centre's protocol (``Centre.acq``):

- slice thickness and gap set the slice spacing; breath-hold misalignment shifts each slice
  in-plane by its own offset; base and apex coverage can miss the top basal or the apical slice;
- 3 T scans gain SNR, get stronger B1 shading and, sometimes, dark SSFP off-resonance bands;
- zero-filled reconstruction: the scan is acquired at twice the stored pixel size and
  interpolated by zero-padding k-space (ringing included), as many scanners store it;
- phase-encode ghosting: a faint replica of the beating heart displaced along the
  phase-encode axis;
- realistic frame counts, with a continuous systole whose peak usually falls between frames, so
  ES is the *minimum-LV-volume frame*, as a reader would pick it.

``render_v2`` renders every frame (the raw-layout training cohort) or only ED and ES (the
fast path of the test cohorts): the renderer draws its random numbers per slice, never per
frame, so both give identical ED and ES volumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from data_prep.phantoms.anatomy import Scan, render_stack
from data_prep.phantoms.appearance import VendorStyle, bias_field, scanner_affine
from data_prep.phantoms.cohort_v1 import Phantom
from data_prep.phantoms.labels import subject_seed
from data_prep.phantoms.nuisance import (
    appearance_style,
    draw_nuisance,
    roll_slices,
    scanner_noise,
    tilt_offsets,
)
from data_prep.phantoms.sampling import Draw


@dataclass(frozen=True)
class Acquired:
    """A rendered v2 scan and what its protocol did (for metadata and figures)."""

    phantom: Phantom  # cine holds every frame, or only [ED, ES] on the fast path
    ed_frame: int  # 0-based ED / ES frames of the full cine
    es_frame: int
    n_frames: int
    field: str
    zero_filled: bool
    banding: bool
    missing: str  # "", "base", "apex" or "base+apex"


def contraction_curve(n_frames: int, ed_index: int, es_fraction: float) -> np.ndarray:
    """0 at ED, 1 at the (continuous) systolic peak: cosine systole, cosine filling.

    Unlike v1, the peak is not snapped to a frame, so the frame of least LV volume only
    approximates true end-systole, as with a real cine's temporal resolution.
    """
    phase = ((np.arange(n_frames) - ed_index) % n_frames) / n_frames
    systole = 0.5 * (1 - np.cos(np.pi * np.minimum(phase / es_fraction, 1.0)))
    diastole = 0.5 * (1 + np.cos(np.pi * np.clip((phase - es_fraction) / (1 - es_fraction),
                                                 0, 1)))
    return np.where(phase <= es_fraction, systole, diastole)


def _banding(shape: tuple[int, int], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Dark off-resonance bands (SSFP), strongest away from the heart at the image centre."""
    nx, ny = shape
    x, y = np.meshgrid((np.arange(nx) - nx / 2) * spacing, (np.arange(ny) - ny / 2) * spacing,
                       indexing="ij")
    angle, period = rng.uniform(0, np.pi), rng.uniform(30, 60)
    offset = rng.uniform(0, period)
    d = np.abs(((x * np.cos(angle) + y * np.sin(angle) + offset) % period) - period / 2)
    band = np.exp(-(d / 1.5) ** 2)
    weight = 1 / (1 + np.exp(-(np.hypot(x, y) - 60) / 10))  # off the heart, towards the lungs
    return (1 - 0.8 * band * weight).astype(np.float32)


def _zero_fill(image: np.ndarray) -> np.ndarray:
    """Interpolate (X, Y, ...) by 2 in-plane by zero-padding the centred 2D spectrum."""
    nx, ny = image.shape[:2]
    spectrum = np.fft.fftshift(np.fft.fft2(image, axes=(0, 1)), axes=(0, 1))
    padded = np.zeros((2 * nx, 2 * ny, *image.shape[2:]), dtype=np.complex64)
    padded[nx // 2:nx // 2 + nx, ny // 2:ny // 2 + ny] = spectrum
    return np.fft.ifft2(np.fft.ifftshift(padded, axes=(0, 1)), axes=(0, 1)) * 4


def acquire(image: np.ndarray, style: VendorStyle, spacing: float, rng: np.random.Generator,
            zero_filled: bool, noise_seeds: list[int]) -> np.ndarray:
    """Relative stack -> stored int16: blur, bias, complex noise, optional zero-fill, magnitude.

    The chain of ``appearance.apply_appearance`` (v1), with the zero-filled interpolation
    applied to the complex image before the magnitude, where a scanner applies it. Each frame's
    noise comes from its own seed (``noise_seeds``), so rendering a subset of the frames gives
    the same values for those frames.
    """
    sigma_px = float(rng.uniform(*style.blur_mm)) / spacing
    blurred = ndimage.gaussian_filter(image, sigma=(sigma_px, sigma_px, 0, 0))
    blurred *= bias_field(image.shape, rng, style.bias)[..., None]
    peak = float(rng.uniform(*style.max_intensity)) * 0.8
    noise_sigma = 1.0 / float(rng.uniform(*style.snr))
    complex_image = np.empty(blurred.shape, dtype=np.complex64)
    for t, frame_seed in enumerate(noise_seeds):
        noise = np.random.default_rng(frame_seed).standard_normal(
            (2, *blurred.shape[:3]), dtype=np.float32) * noise_sigma
        complex_image[..., t] = (blurred[..., t] + noise[0]) + 1j * noise[1]
    if zero_filled:
        complex_image = _zero_fill(complex_image)
    stored = np.abs(complex_image) * peak
    return np.clip(np.rint(stored), 0, 32767).astype(np.int16)


def render_v2(draw: Draw, phases: str = "all") -> Acquired:
    """Render one drawn subject under its centre's protocol (``phases``: ``all`` or ``ed_es``)."""
    if phases not in ("all", "ed_es"):
        raise ValueError("phases must be 'all' or 'ed_es'")
    centre, latent = draw.centre, draw.latent
    acq = centre.acq
    config_3t = centre.field_3t
    rng = np.random.default_rng([latent.seed, 1])  # stream 1: rendering
    style = appearance_style(centre.vendor, centre.appearance)
    nuisance = draw_nuisance(centre.nuisance, latent.seed)  # own stream: rng is untouched
    heart = latent.heart
    spacing = float(rng.uniform(*style.spacing))
    matrix = int(rng.choice(style.matrices))
    shape = (matrix, int(round(matrix * rng.uniform(0.82, 1.0) / 8) * 8))
    zero_filled = bool(rng.random() < acq["zero_fill"])
    grid, grid_spacing = ((shape[0] // 2, shape[1] // 2), 2 * spacing) if zero_filled else \
        (shape, spacing)
    step = acq["slice_thickness"] + acq["slice_gap"]
    top_u = heart.length + float(rng.uniform(2, step + 5))
    missing = []
    if rng.random() < acq["basal_miss"]:
        top_u -= step
        missing.append("base")
    n_slices = int(math.ceil(top_u / step)) + 1
    if rng.random() < acq["apical_miss"]:
        n_slices -= 1
        missing.append("apex")
    n_frames = max(2, int(round(acq["frames"])))
    ed_index = 0 if centre.dataset == "acdc" or rng.random() < 0.7 else \
        int(rng.integers(n_frames))
    squeeze = contraction_curve(n_frames, ed_index, float(rng.uniform(0.33, 0.42)))
    es_index = int(np.argmax(squeeze))  # least LV volume: LV area falls as squeeze rises
    half_fov = min(grid) * grid_spacing / 2
    scan = Scan(shape=grid, spacing=grid_spacing, thickness=step, n_slices=n_slices,
                n_frames=n_frames if phases == "all" else 2, ed_index=ed_index,
                es_fraction=0.4,  # unused: the squeeze below sets every rendered phase
                centre=(float(rng.uniform(-0.15, 0.15) * half_fov),
                        float(rng.uniform(-0.15, 0.15) * half_fov)),
                septum_angle=float(np.deg2rad(style.septum_angle_deg + rng.normal(0, 10)
                                              + nuisance.rotation_deg)),
                top_u=top_u, myo_level=1.0 / float(rng.uniform(*style.blood_to_myo)),
                fat_scale=nuisance.fat_scale)
    wanted = squeeze if phases == "all" else squeeze[[ed_index, es_index]]
    image, labels = render_stack(heart, scan, rng, squeeze=wanted)
    # breath-hold misalignment: each slice (all its frames) shifted by its own offset
    # (whole pixels: sub-pixel accuracy is below the harmonized 1 mm grid's concern, and a
    # roll is ~50x cheaper than interpolation; the few wrapped edge pixels are background)
    offsets = np.rint(rng.normal(0, 1, size=(n_slices, 2)) * acq["misalign_sd"] / grid_spacing)
    roll_slices(image, offsets)
    roll_slices(labels, offsets)
    if nuisance.tilt_deg:  # the long axis leans against the stack normal
        offsets = tilt_offsets(nuisance, top_u - step * np.arange(n_slices), heart.length / 2,
                               grid_spacing)
        roll_slices(image, offsets)
        roll_slices(labels, offsets)
    # phase-encode ghost of the beating heart (and what surrounds it) along y
    ghost_shift = int(grid[1] * rng.uniform(0.25, 0.5))
    if acq["ghost_level"] > 0:
        heart_mask = ndimage.maximum_filter(labels > 0, size=(9, 9, 1, 1))
        image = image + acq["ghost_level"] * np.roll(image * heart_mask, ghost_shift, axis=1)
    field = "3.0" if rng.random() < acq["share_3t"] else "1.5"
    snr_gain = float(rng.uniform(*config_3t["snr_gain"]))
    b1_extra = float(rng.uniform(*config_3t["b1_bias"]))
    band_p = config_3t["banding_probability"] if field == "3.0" else \
        config_3t["banding_probability_15t"]
    banding = bool(rng.random() < band_p)
    if banding:
        image = image * _banding(grid, grid_spacing, rng)[:, :, None, None]
    if field == "3.0":
        style = replace(style, snr=(style.snr[0] * snr_gain, style.snr[1] * snr_gain),
                        bias=style.bias + b1_extra)
    style = scanner_noise(style, nuisance)
    frames = range(n_frames) if phases == "all" else (ed_index, es_index)
    cine = acquire(image, style, grid_spacing, rng, zero_filled,
                   [subject_seed(latent.seed, "noise", t) for t in frames])
    if zero_filled:
        labels = labels.repeat(2, axis=0).repeat(2, axis=1)
    affine = scanner_affine(style, spacing, step, rng, shape)
    stored_ed, stored_es = (ed_index, es_index) if phases == "all" else (0, 1)
    phantom = Phantom(cine, labels, stored_ed, stored_es, affine, str(rng.choice(style.scanners)),
                      field, latent.height, latent.weight)
    return Acquired(phantom, ed_index, es_index, n_frames, field, zero_filled, banding,
                    "+".join(missing))

