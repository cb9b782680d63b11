"""Latent subjects, their cardiac measurements, and each centre's diagnostic rule.

A v2 subject is first drawn as *latent* parameters only (pathology, severity, body, heart),
cheaply and without rendering, so the oracle headroom report can use thousands of them. The
measurements (LVEF, indexed LV/RV end-diastolic volumes, maximal wall thickness, RVEF) follow
analytically from the heart parameters the renderer draws; they are the generator's ground
truth, not what a segmentation of the rendered image would measure.

The label is the centre's **annotation policy**: the centre reads the measurements with its
own reader noise and calls the heart abnormal when any of its thresholds is crossed (ACDC's
published group rules have this form), with a small rate of diagnoses recorded against its own
rule. At annotation strength 0 every centre uses the reference rule and reference noise, so
P(label | heart) is the same everywhere; only then is a pooled model optimal for every vendor.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from data_prep.conventions import HEALTHY_CODE
from data_prep.phantoms.anatomy import PATHOLOGY_EFFECTS, Heart, normal_heart
from data_prep.phantoms.centres import Centre

MEASURES = ("lvef", "lvedvi", "max_wall", "rvedvi", "rvef")
# Per dataset: the codes its table may hold, and the code a centre records for a heart it calls
# abnormal when the drawn pathology is not in that vocabulary (by the first criterion crossed).
VOCABULARY = {
    "acdc": ("NOR", "MINF", "DCM", "HCM", "RV"),
    "mnms": ("NOR", "DCM", "HCM", "HHD", "ARV", "AHS", "IHD", "LVNC", "Other"),
    "mnms2": ("NOR", "LV", "HCM", "ARR", "FALL", "CIA", "RV", "TRI"),
}
CRITERION_CODE = {
    "acdc": {"lv": "DCM", "wall": "HCM", "rv": "RV"},
    "mnms": {"lv": "DCM", "wall": "HCM", "rv": "ARV"},
    "mnms2": {"lv": "LV", "wall": "HCM", "rv": "RV"},
}


@dataclass(frozen=True)
class Latent:
    """Everything the renderer and the annotator need about one subject, before any image."""

    seed: int
    pathology: str  # the drawn (generative) pathology code
    severity: float
    heart: Heart
    height: float  # cm
    weight: float  # kg
    age: int
    sex: str

    @property
    def bsa(self) -> float:
        """Body surface area (m2), Mosteller's formula."""
        return float(np.sqrt(self.height * self.weight / 3600.0))


def subject_seed(seed: int, *parts: object) -> int:
    return zlib.crc32("/".join(map(str, (seed, *parts))).encode())


def _clip(value: float, lo: float, hi: float) -> float:
    """Scalar clip: np.clip on Python floats costs more than the draw it bounds."""
    return float(min(max(value, lo), hi))


def draw_latent(centre: Centre, seed: int, pathology: str | None = None) -> Latent:
    """One subject of ``centre`` from its own seed (pathology drawn from the centre's mix)."""
    rng = np.random.default_rng([seed, 0])  # stream 0: latents; rendering uses stream 1
    codes = list(centre.pathology_mix)
    cumulative = np.cumsum(list(centre.pathology_mix.values()))
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    drawn = codes[min(index, len(codes) - 1)]
    pathology = pathology or drawn
    male = rng.random() < centre.mix["male_share"]
    body = _clip(rng.normal(centre.mix["body_mean"], 0.07), 0.8, 1.2)
    heart = normal_heart(rng, body)
    severity = float(rng.beta(2.2, 1.6))
    if rng.random() < centre.mix["mild_share"]:  # community centres see more mild disease
        severity *= 0.35
    if pathology != HEALTHY_CODE:
        heart = PATHOLOGY_EFFECTS[pathology](heart, severity, rng)
    heart = replace(heart, radius=_clip(heart.radius, 12, 42), wall=_clip(heart.wall, 3.5, 24),
                    ejection=_clip(heart.ejection, 0.08, 0.78))
    height = _clip(rng.normal(176 if male else 163, 7) * body, 140, 205)
    weight = _clip(rng.normal(80 if male else 66, 12) * body ** 2, 40, 150)
    age = int(_clip(rng.normal(centre.mix["age_mean"], 14), 18, 90))
    return Latent(seed, pathology, severity if pathology != HEALTHY_CODE else 0.0, heart,
                  round(height, 1), round(weight, 1), age, "M" if male else "F")


def measurements(latent: Latent) -> dict[str, float]:
    """Ground-truth measurements implied by the heart parameters (volumes in ml/m2).

    LV cavity: half-ellipsoid of the ED radius over the inner length; systole removes
    ``ejection`` of the cavity area (only 10 % of it in an akinetic infarct sector) and shortens
    the long axis. RV: the crescent (about 0.6 of its ellipse) on the septal side, same systole.
    """
    h = latent.heart
    inner_length = h.length - 0.8 * h.wall
    lv_ed = 2 / 3 * np.pi * h.radius ** 2 * inner_length / 1000.0
    akinetic = 0.9 * h.infarct_width / (2 * np.pi)
    area_kept = 1 - h.ejection * (1 - akinetic)
    lvef = 1 - area_kept * (1 - h.long_shortening)
    rv_a = (h.radius + h.wall) * 0.9 * h.rv_scale
    rv_b = (h.radius + h.wall) * 1.45 * h.rv_scale
    rv_ed = 0.6 * np.pi * rv_a * rv_b * (2 / 3) * 0.8 * h.length / 1000.0
    rvef = 1 - (1 - h.rv_ejection) * (1 - h.long_shortening)
    return {"lvef": float(lvef), "lvedvi": float(lv_ed / latent.bsa),
            "max_wall": float(h.wall + h.septal_extra), "rvedvi": float(rv_ed / latent.bsa),
            "rvef": float(rvef)}


def read_by_centre(latent: Latent, centre: Centre) -> dict[str, float]:
    """The measurements as the centre's readers obtain them (their own measurement noise)."""
    rng = np.random.default_rng([latent.seed, 2])  # stream 2: the reading
    m = measurements(latent)
    r = centre.rule
    z = rng.standard_normal(5)
    return {"lvef": m["lvef"] + r["noise_ef"] * z[0],
            "lvedvi": m["lvedvi"] * (1 + r["noise_volume"] * z[1]),
            "max_wall": m["max_wall"] + r["noise_wall"] * z[2],
            "rvedvi": m["rvedvi"] * (1 + r["noise_volume"] * z[3]),
            "rvef": m["rvef"] + r["noise_ef"] * z[4],
            "flip": float(rng.random())}


def crossed(read: dict[str, float], rule: dict[str, float]) -> list[str]:
    """Which criteria (``lv``, ``wall``, ``rv``) the reading crosses under ``rule``."""
    out = []
    if read["lvef"] < rule["lvef_cut"] or read["lvedvi"] > rule["lvedvi_max"]:
        out.append("lv")
    if read["max_wall"] >= rule["wall_max"]:
        out.append("wall")
    if read["rvedvi"] > rule["rvedvi_max"] or read["rvef"] < rule["rvef_cut"]:
        out.append("rv")
    return out


def annotate(latent: Latent, centre: Centre, dataset: str) -> tuple[int, str]:
    """``(label, recorded pathology code)`` as the centre would write them in ``dataset``."""
    read = read_by_centre(latent, centre)
    criteria = crossed(read, centre.rule)
    label = int(bool(criteria))
    if read["flip"] < centre.rule["flip_rate"]:
        label = 1 - label
    if label == 0:
        return 0, HEALTHY_CODE
    if latent.pathology != HEALTHY_CODE and latent.pathology in VOCABULARY[dataset]:
        return 1, latent.pathology
    first = criteria[0] if criteria else "lv"  # a flipped normal reading: the commonest call
    return 1, CRITERION_CODE[dataset][first]
