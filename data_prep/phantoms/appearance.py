"""How each vendor's scanners make the same heart look different (the federated shift).

Each ``VendorStyle`` fixes ranges for geometry (in-plane spacing, matrix, slice thickness, frame
count, oblique orientation), contrast (blood / myocardium), and the imaging chain (blur, bias
field, Rician noise, intensity range and bit depth). ``apply_appearance`` turns a rendered
relative-intensity stack into the integers a scanner of that vendor would store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class VendorStyle:
    spacing: tuple[float, float]  # in-plane mm
    matrices: tuple[int, ...]
    thickness: tuple[float, float]  # slice spacing mm
    frames: tuple[int, int]  # cine frames (kept small so phantoms stay quick)
    max_intensity: tuple[float, float]  # brightest stored value
    blood_to_myo: tuple[float, float]  # SSFP contrast
    snr: tuple[float, float]  # blood signal / noise sigma
    bias: float  # peak-to-peak strength of the smooth bias field
    blur_mm: tuple[float, float]  # in-plane point-spread sigma
    septum_angle_deg: float  # where the RV lies in the image
    oblique_deg: float  # largest tilt of the stack against the scanner axes
    shear_probability: float  # share of stacks with slightly non-orthonormal direction cosines
    field_strengths: tuple[str, ...]
    scanners: tuple[str, ...]


STYLES: dict[str, VendorStyle] = {
    "Siemens": VendorStyle((1.35, 1.65), (192, 208, 224), (7.0, 10.0), (6, 8), (600, 1500),
                           (3.0, 3.8), (18, 26), 0.2, (0.6, 0.9), 180, 25, 0.0,
                           ("1.5", "3.0"), ("Avanto", "Aera", "TrioTim", "Skyra")),
    "Philips": VendorStyle((1.15, 1.35), (240, 256), (8.0, 10.0), (6, 7), (150, 450),
                           (3.8, 4.8), (22, 32), 0.25, (0.4, 0.7), 205, 35, 0.3,
                           ("1.5", "3.0"), ("Achieva", "Ingenia")),
    "GE": VendorStyle((1.35, 1.6), (224, 256), (8.0, 10.0), (5, 6), (1500, 3500),
                      (2.4, 3.0), (11, 17), 0.45, (0.8, 1.2), 160, 30, 0.3,
                      ("1.5",), ("Signa Excite", "Signa HDxt", "Signa Explorer")),
    "Canon": VendorStyle((1.05, 1.25), (224, 240), (9.0, 10.0), (5, 6), (8000, 16000),
                         (2.7, 3.4), (15, 21), 0.3, (1.1, 1.5), 195, 40, 0.5,
                         ("1.5",), ("Vantage Orian",)),
}


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field (coil sensitivity): a random low-order polynomial in x, y, z."""
    nx, ny, nz = shape[:3]
    x, y, z = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny),
                          np.linspace(-1, 1, nz), indexing="ij")
    c = rng.normal(size=6)
    poly = c[0] * x + c[1] * y + 0.3 * c[2] * z
    poly = poly + 0.5 * (c[3] * x * y + c[4] * x ** 2 + c[5] * y ** 2)
    poly = poly / (np.ptp(poly) + 1e-6)
    return (1 + strength * poly).astype(np.float32)


def apply_appearance(image: np.ndarray, style: VendorStyle, spacing: float,
                     rng: np.random.Generator,
                     of_cine: tuple[int, Sequence[int]] | None = None) -> np.ndarray:
    """Relative (X, Y, Z, T) stack -> stored int16 values: blur, bias, scale, Rician noise.

    ``of_cine = (n_frames, frames)``: ``image`` holds only those frames of an ``n_frames`` cine.
    The noise of every frame is still drawn (the random stream, and so every later draw, stays
    the whole cine's) and those frames' noise is kept, so the result equals the same frames of
    the whole cine's result, value for value: blur and bias act within each frame.
    """
    sigma_px = float(rng.uniform(*style.blur_mm)) / spacing
    blurred = ndimage.gaussian_filter(image, sigma=(sigma_px, sigma_px, 0, 0))
    blurred *= bias_field(image.shape, rng, style.bias)[..., None]
    peak = float(rng.uniform(*style.max_intensity)) * 0.8
    noise_sigma = 1.0 / float(rng.uniform(*style.snr))
    if of_cine is None:
        noise_shape, kept = blurred.shape, slice(None)
    else:
        noise_shape, kept = (*blurred.shape[:3], of_cine[0]), list(of_cine[1])
    real = blurred + rng.standard_normal(noise_shape, dtype=np.float32)[..., kept] * noise_sigma
    imag = rng.standard_normal(noise_shape, dtype=np.float32)[..., kept] * noise_sigma
    stored = np.sqrt(real ** 2 + imag ** 2) * peak
    return np.clip(np.rint(stored), 0, 32767).astype(np.int16)


def scanner_affine(style: VendorStyle, spacing: float, thickness: float,
                   rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Voxel-to-world affine of an oblique short-axis stack (sometimes slightly sheared)."""
    tilt = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(style.oblique_deg))
    direction = tilt.as_matrix()
    if rng.random() < style.shear_probability:
        direction = direction @ (np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array([spacing, spacing, thickness])
    affine[:3, 3] = -affine[:3, :3] @ np.array([shape[0] / 2, shape[1] / 2, 0.0]) + \
        rng.uniform(-30, 30, size=3)
    return affine
