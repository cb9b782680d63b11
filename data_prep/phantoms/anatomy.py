"""A parametric beating heart in a thorax, rendered as a short-axis cine stack.

Model, in millimetres, short-axis plane (x, y) and long axis ``u`` measured from the LV apex:
- LV: two nested half-ellipsoids (endocardium, epicardium). Wall thickness varies with the angle
  (septal hypertrophy, infarct thinning); papillary muscles sit in the cavity.
- Systole: the endocardium moves inwards by the LV's area ejection (none in akinetic sectors),
  the myocardium keeps its area (so the wall thickens) and the base descends towards the apex.
- RV: an ellipse wrapped around the septum with its own size, ejection and free wall.
- Around it: pericardial fat, lungs, liver (lower slices), spine, aorta, muscle, subcutaneous fat,
  each with a smooth texture.
Every pathology in ``PATHOLOGY_EFFECTS`` changes these parameters the way the disease changes the
heart, scaled by a per-subject severity that is sometimes mild, so classes overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from data_prep.conventions import LV, MYO, RV


@dataclass(frozen=True)
class Heart:
    radius: float  # LV endocardial radius at the base, end-diastole (mm)
    wall: float  # LV wall thickness at end-diastole (mm)
    ejection: float  # fraction of LV cavity area lost from ED to ES (in a normally moving wall)
    length: float  # apex-to-base distance of the LV at ED (mm)
    long_shortening: float  # fraction of ``length`` lost at ES (base descent)
    septal_extra: float = 0.0  # extra septal thickness (asymmetric hypertrophy), mm
    infarct_width: float = 0.0  # angular width of an infarcted sector (rad); 0 = none
    infarct_angle: float = 0.0  # sector centre, relative to the septum (rad)
    infarct_thinning: float = 0.0  # fraction of the wall lost in the sector
    rv_scale: float = 1.0  # RV cavity size relative to a normal RV of this LV
    rv_ejection: float = 0.45  # fraction of RV cavity area lost at ES
    rv_wall: float = 3.0  # RV free-wall thickness (mm)
    trabeculation: float = 0.0  # depth of a non-compacted layer (LVNC), mm
    ellipticity: float = 0.05  # LV cross-section elongation


def _severity(rng: np.random.Generator) -> float:
    """Disease severity in [0, 1]; one case in five is mild so it overlaps with normal hearts."""
    s = float(rng.beta(2.2, 1.6))
    return s * 0.35 if rng.random() < 0.2 else s


def normal_heart(rng: np.random.Generator, body: float) -> Heart:
    return Heart(
        radius=float(rng.normal(26.0, 2.2)) * body,
        wall=float(rng.normal(8.3, 0.9)),
        ejection=float(np.clip(rng.normal(0.54, 0.06), 0.38, 0.7)),
        length=float(rng.normal(90, 6)) * body,
        long_shortening=float(np.clip(rng.normal(0.13, 0.025), 0.05, 0.2)),
        rv_scale=float(rng.normal(1.0, 0.09)),
        rv_ejection=float(np.clip(rng.normal(0.45, 0.06), 0.3, 0.6)),
        rv_wall=float(rng.normal(3.0, 0.4)),
        ellipticity=float(rng.uniform(0.0, 0.1)),
    )


def _dilated(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, radius=h.radius + s * r.uniform(7, 13), wall=h.wall - s * r.uniform(1.5, 3),
                   ejection=h.ejection * (1 - s * r.uniform(0.45, 0.75)),
                   long_shortening=h.long_shortening * (1 - 0.6 * s))


def _hypertrophic(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, wall=h.wall + s * r.uniform(2.5, 6), septal_extra=s * r.uniform(3, 9),
                   radius=h.radius - s * r.uniform(3, 6),
                   ejection=min(0.75, h.ejection + s * r.uniform(0.05, 0.15)))


def _infarct(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, infarct_width=r.uniform(0.9, 1.9), infarct_angle=r.uniform(1.2, 5.1),
                   infarct_thinning=s * r.uniform(0.35, 0.6),
                   radius=h.radius + s * r.uniform(1, 6),
                   ejection=h.ejection * (1 - s * r.uniform(0.1, 0.35)))


def _hypertensive(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, wall=h.wall + s * r.uniform(1.5, 4), radius=h.radius - s * 1.5)


def _rv_dilated(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, rv_scale=h.rv_scale + s * r.uniform(0.35, 0.75),
                   rv_ejection=h.rv_ejection * (1 - s * r.uniform(0.3, 0.6)))


def _rv_volume_overload(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, rv_scale=h.rv_scale + s * r.uniform(0.3, 0.6),
                   rv_ejection=h.rv_ejection * (1 - s * 0.15))


def _fallot(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, rv_scale=h.rv_scale + s * r.uniform(0.25, 0.55),
                   rv_wall=h.rv_wall + s * r.uniform(2, 4),
                   rv_ejection=h.rv_ejection * (1 - s * 0.35))


def _arrhythmogenic(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, rv_scale=h.rv_scale + s * r.uniform(0.1, 0.35),
                   rv_ejection=h.rv_ejection * (1 - s * 0.3), ejection=h.ejection * (1 - s * 0.15))


def _athlete(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, radius=h.radius + s * r.uniform(2, 4.5), wall=h.wall + s * r.uniform(0.5, 2),
                   rv_scale=h.rv_scale + s * 0.2)


def _noncompaction(h: Heart, s: float, r: np.random.Generator) -> Heart:
    return replace(h, trabeculation=2 + s * r.uniform(3, 7), ejection=h.ejection * (1 - s * 0.3))


def _other(h: Heart, s: float, r: np.random.Generator) -> Heart:
    effect = (_dilated, _hypertensive, _rv_dilated)[int(r.integers(3))]
    return effect(h, 0.5 * s, r)


PATHOLOGY_EFFECTS = {
    "DCM": _dilated, "LV": _dilated, "HCM": _hypertrophic, "MINF": _infarct, "IHD": _infarct,
    "HHD": _hypertensive, "RV": _rv_dilated, "ARV": _rv_dilated, "TRI": _rv_volume_overload,
    "CIA": _rv_volume_overload, "FALL": _fallot, "ARR": _arrhythmogenic, "AHS": _athlete,
    "LVNC": _noncompaction, "Other": _other,
}


def sample_heart(pathology: str, rng: np.random.Generator, body: float = 1.0) -> Heart:
    """A random heart of the given pathology code (``NOR`` or a key of PATHOLOGY_EFFECTS)."""
    heart = normal_heart(rng, body)
    if pathology != "NOR":
        heart = PATHOLOGY_EFFECTS[pathology](heart, _severity(rng), rng)
    return replace(heart, radius=float(np.clip(heart.radius, 12, 42)),
                   wall=float(np.clip(heart.wall, 3.5, 24)),
                   ejection=float(np.clip(heart.ejection, 0.08, 0.78)))


@dataclass(frozen=True)
class Scan:
    """How one stack samples the body: grid, slices, frames and where the heart sits."""

    shape: tuple[int, int]  # in-plane matrix
    spacing: float  # in-plane mm
    thickness: float  # slice spacing mm
    n_slices: int
    n_frames: int
    ed_index: int  # 0-based frame of end-diastole
    es_fraction: float  # systole length as a fraction of the cycle
    centre: tuple[float, float]  # LV centre in mm from the image centre
    septum_angle: float  # in-plane direction from the LV centre to the RV (rad)
    top_u: float  # long-axis position (mm from apex) of the first slice
    myo_level: float  # myocardium intensity (blood = 1)
    fat_scale: float = 1.0  # epicardial fat thickness factor (v2 nuisance; 1: as drawn)

    @property
    def es_index(self) -> int:
        return (self.ed_index + int(round(self.es_fraction * self.n_frames))) % self.n_frames


def contraction(scan: Scan) -> np.ndarray:
    """0 at ED, 1 at ES for every frame: cosine systole, then cosine diastolic filling."""
    phase = ((np.arange(scan.n_frames) - scan.ed_index) % scan.n_frames) / scan.n_frames
    p_es = round(scan.es_fraction * scan.n_frames) / scan.n_frames
    systole = 0.5 * (1 - np.cos(np.pi * np.minimum(phase / p_es, 1.0)))
    diastole = 0.5 * (1 + np.cos(np.pi * np.clip((phase - p_es) / (1 - p_es), 0, 1)))
    return np.where(phase <= p_es, systole, diastole)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _background(scan: Scan, u: float, heart: Heart, rng: np.random.Generator,
                x: np.ndarray, y: np.ndarray, shape_seed: np.ndarray) -> np.ndarray:
    """Static thorax around the heart for one slice (relative intensities, blood = 1)."""
    ant = scan.septum_angle + np.pi / 2
    ax, ay = np.cos(ant), np.sin(ant)  # anterior direction
    lx, ly = -ay, ax  # lateral direction
    cx, cy = scan.centre
    bx, by = cx - 30 * ax, cy - 30 * ay  # body centre, posterior to the heart
    along = (x - bx) * ax + (y - by) * ay
    across = (x - bx) * lx + (y - by) * ly
    phi = np.arctan2(along, across)
    wobble = 1 + 0.04 * np.sin(2 * phi + shape_seed[0]) + 0.03 * np.sin(3 * phi + shape_seed[1])
    body = ((across / 165) ** 2 + (along / 115) ** 2) / wobble ** 2
    img = np.zeros(x.shape, np.float32)
    img[body < 1.0] = 0.8  # subcutaneous fat
    img[body < 0.86] = 0.25  # chest-wall muscle
    img[body < 0.74] = 0.32  # mediastinum / soft tissue
    lungs = np.zeros(x.shape, bool)
    for side in (-1, 1):  # lungs either side of the heart
        lungs |= ((across - side * 85) / 55) ** 2 + ((along + 5) / 70) ** 2 < 1.0
    img[lungs] = 0.05
    # pulmonary vessels: small bright dots scattered in the lungs
    dots = (rng.random(x.shape) < 0.0008) & lungs
    img += 0.5 * (ndimage.gaussian_filter(dots.astype(np.float32), 1.3) > 0.02) * lungs
    spine = np.hypot(across, along + 85)
    img[spine < 22] = 0.3
    img[spine < 14] = 0.55
    aorta = np.hypot(across + 22, along + 58)
    img[aorta < 11] = 0.95
    if u < 0.45 * heart.length:  # liver under the diaphragm on the lower slices
        liver = ((across + 70) / 85) ** 2 + ((along + 10) / 75) ** 2
        img[liver < 1.0] = 0.38
    tex = _texture(rng, x.shape, 2.5)
    return img * (1 + 0.12 * tex)


def _lv_profile(heart: Heart, u: float, length: float) -> tuple[float, float]:
    """Endo- and epicardial radius (mm, ED shape) at height ``u`` above the apex."""
    if u <= 0 or u >= length:
        return 0.0, 0.0
    apex_cap = 0.8 * heart.wall
    outer = (heart.radius + heart.wall) * np.sqrt(max(0.0, 1 - ((length - u) / length) ** 2))
    inner_len = length - apex_cap
    inner = heart.radius * np.sqrt(max(0.0, 1 - ((length - u) / inner_len) ** 2)) \
        if u > apex_cap else 0.0
    return float(inner), float(outer)


def _box(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float,
         half: float) -> tuple[slice, slice]:
    """Index window of the grid within ``half`` mm of (cx, cy): the heart is drawn only there."""
    ix = np.flatnonzero(np.abs(xs - cx) <= half)
    iy = np.flatnonzero(np.abs(ys - cy) <= half)
    return slice(ix[0], ix[-1] + 1), slice(iy[0], iy[-1] + 1)


def render_stack(heart: Heart, scan: Scan, rng: np.random.Generator,
                 squeeze: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(image, labels)`` shaped (X, Y, Z, T); image in relative units, labels 1 LV 2 MYO 3 RV.

    ``squeeze`` (0 = ED, 1 = peak systole) overrides ``contraction(scan)`` so a caller can render
    any subset of cardiac phases (the v2 fast path renders only ED and ES); ``scan.n_frames``
    must then equal ``len(squeeze)``.
    """
    nx, ny = scan.shape
    xs = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * scan.spacing
    ys = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * scan.spacing
    x, y = np.meshgrid(xs, ys, indexing="ij")
    squeeze = contraction(scan) if squeeze is None else np.asarray(squeeze, dtype=float)
    image = np.zeros((nx, ny, scan.n_slices, scan.n_frames), np.float32)
    labels = np.zeros(image.shape, np.uint8)
    pap_angles = scan.septum_angle + np.array([2.5, -2.5])
    trab_phase = rng.uniform(0, 2 * np.pi)
    fat_angle = rng.uniform(0.3, 1.2)
    shape_seed = rng.uniform(0, 2 * np.pi, size=2)
    for k in range(scan.n_slices):
        u = scan.top_u - k * scan.thickness
        background = _background(scan, u, heart, rng, x, y, shape_seed)
        tilt = 0.08 * (u - heart.length / 2)
        cx = scan.centre[0] + tilt * np.cos(scan.septum_angle + 1.0)
        cy = scan.centre[1] + tilt * np.sin(scan.septum_angle + 1.0)
        half = 3.0 * (heart.radius + heart.wall + heart.septal_extra) * max(1.0, heart.rv_scale)
        box = _box(xs, ys, cx, cy, half + 10)
        xb, yb = x[box], y[box]
        dx, dy = xb - cx, yb - cy
        r = np.hypot(dx, dy)
        theta = _wrap(np.arctan2(dy, dx) - scan.septum_angle)
        blood_tex = 1 + 0.04 * _texture(rng, xb.shape, 1.5)
        # epicardial fat is thickest in the atrioventricular and interventricular grooves
        fat_extra = 4.0 * np.maximum(0.0, np.cos(2 * (theta - fat_angle))) ** 3
        for t in range(scan.n_frames):
            s = float(squeeze[t])
            length = heart.length * (1 - heart.long_shortening * s)
            inner0, outer0 = _lv_profile(heart, u, length)
            image[..., k, t] = background
            img, lab = image[..., k, t][box], labels[..., k, t][box]
            if outer0 <= 0:
                if u >= length and u < length + 25:  # atrium above the descending base
                    atrium = r < heart.radius * 0.9
                    img[atrium] = blood_tex[atrium]
                continue
            scale = outer0 / (heart.radius + heart.wall)
            endo0 = inner0 * (1 + heart.ellipticity * np.cos(2 * theta))
            wall0 = (outer0 - inner0) + scale * heart.septal_extra * np.exp(-theta ** 2 / 0.5)
            if heart.infarct_width > 0:
                in_sector = np.abs(_wrap(theta - heart.infarct_angle)) < heart.infarct_width / 2
                wall0 = np.where(in_sector, wall0 * (1 - heart.infarct_thinning), wall0)
                motion = np.where(in_sector, 0.1, 1.0)
            else:
                motion = 1.0
            endo = endo0 * (1 - motion * (1 - np.sqrt(1 - heart.ejection * s)))
            epi = np.sqrt(endo ** 2 + (endo0 + wall0) ** 2 - endo0 ** 2)
            # RV: an ellipse on the septal side, minus the LV.
            rv_size = heart.rv_scale * np.sqrt(1 - heart.rv_ejection * s) * \
                np.sqrt(max(0.0, 1 - ((length - u) / (0.8 * length)) ** 2))
            along = r * np.cos(theta) - (outer0 * 0.8)
            across = r * np.sin(theta)
            rv_a, rv_b = (heart.radius + heart.wall) * 0.9 * rv_size, \
                (heart.radius + heart.wall) * 1.45 * rv_size
            rv_d = (along / max(rv_a, 1e-3)) ** 2 + (across / max(rv_b, 1e-3)) ** 2
            rv_outer = (along / max(rv_a + heart.rv_wall, 1e-3)) ** 2 + \
                (across / max(rv_b + heart.rv_wall, 1e-3)) ** 2
            if scan.fat_scale == 1.0:  # the original expression: same floats, same voxels
                fat = (r < epi + 1.5 + fat_extra) | (rv_outer < 1.12)
            else:
                fat = (r < epi + scan.fat_scale * (1.5 + fat_extra)) | \
                    (rv_outer < 1.12 ** scan.fat_scale)
            img[fat] = 0.75
            rv_wall = (rv_outer < 1.0) & (r >= epi)
            img[rv_wall] = scan.myo_level
            rv_cavity = (rv_d < 1.0) & (r >= epi) & (rv_size > 0)
            img[rv_cavity] = blood_tex[rv_cavity]
            lab[rv_cavity] = RV
            myo = (r < epi) & (r >= endo)
            img[myo] = scan.myo_level
            lab[myo] = MYO
            cavity = r < endo
            img[cavity] = blood_tex[cavity]
            lab[cavity] = LV
            # Papillary muscles and (LVNC) trabeculations: dark in the cavity, labelled LV.
            if 0.25 * length < u < 0.85 * length:
                for angle in pap_angles:
                    px = cx + 0.6 * endo0.mean() * np.cos(angle)
                    py = cy + 0.6 * endo0.mean() * np.sin(angle)
                    pap = (np.hypot(xb - px, yb - py) < 2.5 + 1.5 * s) & cavity
                    img[pap] = scan.myo_level
            if heart.trabeculation > 0:
                trab = cavity & (r > endo - heart.trabeculation) & \
                    (np.sin(9 * theta + trab_phase + 0.15 * r) > 0.2)
                img[trab] = scan.myo_level * 1.2
    return image, labels
