"""What each shift family does, as arrays and tables (notebook 01), plus one small plot.

- acquisition: one subject's ED scan under the reference protocol and with one acquisition
  effect at a time set to the top of its documented range, then under a centre's full protocol;
- case mix: the distribution of the latent LVEF per centre, at mix strength 0 and 1;
- annotation policy: the share labelled *disease* against the true LVEF per centre, at
  annotation strength 0 (one curve for all) and 1 (each centre its own rule).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from data_prep.phantoms.acquisition import render_v2
from data_prep.phantoms.centres import Centre, draw_centres
from data_prep.phantoms.labels import annotate, measurements
from data_prep.phantoms.sampling import Draw, draw_natural, draw_one
from data_prep.phantoms.shifts import Shifts, no_shift, parse_shifts

# one effect at a time, at the top of its range in shifts.toml (the 3 T case forces the bands)
ACQ_EFFECTS: dict[str, dict[str, float]] = {
    "thick slices + gaps": {"slice_thickness": 10.0, "slice_gap": 4.0},
    "breath-hold misalignment": {"misalign_sd": 3.0},
    "3 T (SNR, B1 shading, banding)": {"share_3t": 1.0},
    "zero-filled x2": {"zero_fill": 1.0},
    "phase-encode ghost": {"ghost_level": 0.08},
}


def _slice_and_profile(draw: Draw) -> tuple[np.ndarray, np.ndarray, float, float]:
    """ED mid-ventricular slice, an x-z profile through the LV centre, and the voxel sizes."""
    scan = render_v2(draw, "ed_es")
    ph = scan.phantom
    ed, labels = ph.cine[..., 0].astype(np.float32), ph.labels[..., 0]
    lv = np.argwhere(labels == 1)
    k = int(np.median(lv[:, 2])) if len(lv) else ed.shape[2] // 2
    y = int(np.median(lv[:, 1])) if len(lv) else ed.shape[1] // 2
    zooms = np.sqrt((ph.affine[:3, :3] ** 2).sum(axis=0))
    scale = float(np.percentile(ed, 99.5)) or 1.0
    return ed[:, :, k] / scale, ed[:, y, :] / scale, float(zooms[0]), float(zooms[2])


def acquisition_examples(seed: int = 0, centre_index: int = 2,
                         subject: int = 0) -> list[tuple[str, np.ndarray, np.ndarray, float,
                                                         float]]:
    """``(title, ED slice, x-z profile, in-plane mm, slice step mm)`` per acquisition case."""
    reference = draw_centres(no_shift(), seed)[centre_index]
    full = draw_centres(parse_shifts("acq=1,mix=0,label=0"), seed)[centre_index]
    base = draw_one(reference, seed, "figure", subject)
    cases: list[tuple[str, Centre]] = [("reference protocol", reference)]
    for title, change in ACQ_EFFECTS.items():
        physics = {**reference.field_3t, "banding_probability": 1.0}
        cases.append((title, replace(reference, acq={**reference.acq, **change},
                                     field_3t=physics)))
    cases.append((f"{full.name} protocol (acq=1)", full))
    out = []
    for title, centre in cases:
        image, profile, dxy, dz = _slice_and_profile(replace(base, centre=centre))
        out.append((title, image, profile, dxy, dz))
    return out


def case_mix_table(seed: int = 0, n: int = 400) -> pd.DataFrame:
    """Latent LVEF, severity and body size of ``n`` subjects per centre, at mix 0 and 1."""
    rows = []
    for strength in (0.0, 1.0):
        shifts = Shifts(0.0, strength, 0.0, config=no_shift().config)
        for centre in draw_centres(shifts, seed):
            for d in draw_natural(centre, n, seed, "figure-mix"):
                rows.append({"mix": strength, "centre": centre.name, "vendor": centre.vendor,
                             "lvef": measurements(d.latent)["lvef"], "label": d.label,
                             "severity": d.latent.severity, "bsa": d.latent.bsa})
    return pd.DataFrame(rows)


def annotation_table(seed: int = 0, n: int = 3000) -> pd.DataFrame:
    """Disease share by true-LVEF bin per centre, at annotation strength 0 and 1.

    The same latent subjects (one centre's draws) are labelled by every centre's rule, so the
    curves differ only by the annotation policy.
    """
    rows = []
    for strength in (0.0, 1.0):
        centres = draw_centres(Shifts(0.0, 0.0, strength, config=no_shift().config), seed)
        draws = draw_natural(centres[0], n, seed, "figure-label")
        lvef = np.array([measurements(d.latent)["lvef"] for d in draws])
        bins = np.clip(((lvef - 0.30) / 0.025).astype(int), 0, 15)
        for centre in centres:
            labels = np.array([annotate(d.latent, centre, centre.dataset)[0] for d in draws])
            for b in np.unique(bins):
                mask = bins == b
                if mask.sum() >= 10:
                    rows.append({"label_strength": strength, "centre": centre.name,
                                 "lvef": 0.30 + 0.025 * (b + 0.5),
                                 "disease_share": float(labels[mask].mean())})
    return pd.DataFrame(rows)


def plot_shift_families(examples: list, mix: pd.DataFrame, annotation: pd.DataFrame):
    """Row 1-2: acquisition cases (slice, x-z profile); row 3: case mix and annotation policy."""
    import matplotlib.pyplot as plt

    n = len(examples)
    fig = plt.figure(figsize=(2.3 * n, 8.2))
    grid = fig.add_gridspec(3, n, height_ratios=[1.0, 0.6, 1.1])
    for i, (title, image, profile, dxy, dz) in enumerate(examples):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(image.T, cmap="gray", vmin=0, vmax=1, origin="lower",
                  extent=(0, image.shape[0] * dxy, 0, image.shape[1] * dxy))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(profile.T, cmap="gray", vmin=0, vmax=1, origin="upper", aspect="auto",
                  extent=(0, profile.shape[0] * dxy, profile.shape[1] * dz, 0))
        ax.set_title(f"x-z through the LV ({dz:.0f} mm step)", fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(grid[2, : n // 2])
    for strength, style in ((0.0, ":"), (1.0, "-")):
        part = mix[mix["mix"] == strength]
        for centre, group in part.groupby("centre"):
            values = np.sort(group["lvef"].to_numpy())
            ax.plot(values, np.linspace(0, 1, len(values)), style, lw=1,
                    label=centre if strength == 1.0 else None)
    ax.set_xlabel("latent LVEF")
    ax.set_ylabel("cumulative share")
    ax.set_title("case mix: LVEF per centre (dotted mix=0, solid mix=1)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax = fig.add_subplot(grid[2, n // 2:])
    for strength, style in ((0.0, ":"), (1.0, "-")):
        part = annotation[annotation["label_strength"] == strength]
        for centre, group in part.groupby("centre"):
            ax.plot(group["lvef"], group["disease_share"], style, lw=1,
                    label=centre if strength == 1.0 else None)
    ax.set_xlabel("true LVEF (same subjects for every centre)")
    ax.set_ylabel("labelled disease")
    ax.set_title("annotation policy (dotted label=0, solid label=1)", fontsize=9)
    fig.tight_layout()
    return fig
