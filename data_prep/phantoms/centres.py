"""Centres within vendors: each with its own protocol, population and diagnostic rule.

Vendors stay the federated clients; each holds the centres that fed the real datasets (one per
(dataset, vendor) cell of ``COHORT_MIX``: Siemens ACDC + M&Ms + M&Ms-2, Philips and GE M&Ms +
M&Ms-2, Canon M&Ms), plus one **unseen centre** (its vendor drawn with the cohort seed) that only
appears in test cohorts. Every centre parameter is drawn with the cohort seed from the ranges
of ``shifts.toml`` and scaled by its family's strength, so which vendor is the outlier changes
between cohort seeds while a strength change moves every centre along the same draw.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data_prep.conventions import VENDORS
from data_prep.phantoms.cohort_v1 import COHORT_MIX
from data_prep.phantoms.shifts import Shifts

VENDOR_TAG = {"Siemens": "SIE", "Philips": "PHI", "GE": "GE", "Canon": "CAN"}
DATASET_TAG = {"acdc": "ACDC", "mnms": "MNMS", "mnms2": "MNMS2"}


@dataclass(frozen=True)
class Centre:
    """One imaging centre: where its subjects come from and how it scans and labels them."""

    name: str  # names the phantom centre in metadata.csv, e.g. ``PHI-MNMS2``
    vendor: str
    dataset: str  # raw layout (and vocabulary) of its subjects; the unseen centre uses mnms
    size: int  # training subjects at scale 1.0 (the real dataset's count)
    unseen: bool
    acq: dict[str, float]
    mix: dict[str, float]
    rule: dict[str, float]
    pathology_mix: dict[str, float]  # generative pathology code -> probability
    field_3t: dict[str, Any]  # physics of a 3 T scan (shifts.toml [acq.field_3t])
    # per-subject nuisance ranges {name: (lo, hi)} (Shifts.subject_ranges; empty: none)
    nuisance: dict[str, tuple[float, float]] = field(default_factory=dict)
    appearance: float = 1.0  # vendor appearance strength (shifts ``app``)


def pooled_mix() -> dict[str, float]:
    """Pathology shares pooled over all real cells: every centre's mix at mix strength 0."""
    total: dict[str, float] = {}
    for mix in COHORT_MIX.values():
        for code, n in mix.items():
            total[code] = total.get(code, 0.0) + n
    norm = sum(total.values())
    return {code: n / norm for code, n in sorted(total.items())}


def _seed(seed: int, *parts: str) -> int:
    return zlib.crc32("/".join((str(seed), *parts)).encode())


def _draw_family(rng: np.random.Generator, ranges: dict[str, Any],
                 strength: float) -> dict[str, float]:
    """``ref + strength * (U(lo, hi) - ref)`` per parameter, drawn in the file's order."""
    values = {}
    for name, value in ranges.items():
        if not isinstance(value, list):
            continue  # physics constants (e.g. acq.field_3t) are not per centre
        ref, lo, hi = (float(v) for v in value)
        draw = float(rng.uniform(lo, hi))
        values[name] = ref + strength * (draw - ref)
    return values


def vendor_camps(seed: int) -> dict[str, int]:
    """Annotation camp of each vendor (+1: more disease, -1: less), two vendors each."""
    order = np.random.default_rng(_seed(seed, "camps")).permutation(len(VENDORS))
    return {VENDORS[i]: (1 if rank < len(VENDORS) // 2 else -1) for rank, i in enumerate(order)}


def camp_rule(rule: dict[str, float], camp: int, shifts: Shifts) -> dict[str, float]:
    """``rule`` with its cut-offs moved ``shifts.camps`` half-widths towards the camp's side."""
    moved = dict(rule)
    for name, direction in shifts.config["camps"].items():
        ref, lo, hi = (float(v) for v in shifts.config["label"][name])
        moved[name] = ref + camp * float(direction) * shifts.camps * (hi - lo) / 2
    return moved


def _make_centre(name: str, vendor: str, dataset: str, size: int, unseen: bool,
                 own_mix: dict[str, float], shifts: Shifts, seed: int) -> Centre:
    config = shifts.config
    # one generator per family and centre: changing one family's ranges never moves another's
    acq = _draw_family(np.random.default_rng(_seed(seed, name, "acq")), config["acq"],
                       shifts.acq)
    mix = _draw_family(np.random.default_rng(_seed(seed, name, "mix")), config["mix"],
                       shifts.mix)
    rule = _draw_family(np.random.default_rng(_seed(seed, name, "label")), config["label"],
                        shifts.label)
    if shifts.camps > 0:
        rule = camp_rule(rule, vendor_camps(seed)[vendor], shifts)
    common = pooled_mix()
    codes = sorted(set(common) | set(own_mix))
    blend = {c: (1 - shifts.mix) * common.get(c, 0.0) + shifts.mix * own_mix.get(c, 0.0)
             for c in codes}
    norm = sum(blend.values())
    return Centre(name, vendor, dataset, size, unseen, acq, mix, rule,
                  {c: p / norm for c, p in blend.items() if p > 0},
                  dict(config["acq"]["field_3t"]), shifts.subject_ranges(), shifts.app)


def draw_centres(shifts: Shifts, seed: int) -> list[Centre]:
    """The eight training centres (real order of COHORT_MIX) and the unseen centre, last."""
    centres = []
    for (dataset, vendor), mix in COHORT_MIX.items():
        total = sum(mix.values())
        centres.append(_make_centre(f"{VENDOR_TAG[vendor]}-{DATASET_TAG[dataset]}", vendor,
                                    dataset, total, False,
                                    {c: n / total for c, n in mix.items()}, shifts, seed))
    vendor = VENDORS[int(np.random.default_rng(_seed(seed, "unseen")).integers(len(VENDORS)))]
    # the unseen centre labels and records codes in the M&Ms vocabulary (the richest one)
    centres.append(_make_centre(f"{VENDOR_TAG[vendor]}-UNSEEN", vendor, "mnms", 0, True,
                                pooled_mix(), shifts, seed))
    return centres


def centre_table(centres: list[Centre]) -> pd.DataFrame:
    """One row per centre: vendor, dataset, size, NOR share and every drawn parameter."""
    rows = []
    for c in centres:
        row: dict[str, Any] = {"centre": c.name, "vendor": c.vendor,
                               "dataset": "(test only)" if c.unseen else c.dataset, "size": c.size,
                               "unseen": c.unseen,
                               "nor_share": round(c.pathology_mix.get("NOR", 0.0), 3)}
        row.update({f"acq.{k}": round(v, 3) for k, v in c.acq.items()})
        row.update({f"mix.{k}": round(v, 3) for k, v in c.mix.items()})
        row.update({f"label.{k}": round(v, 3) for k, v in c.rule.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def centres_by_vendor(centres: list[Centre], *, seen: bool = True) -> dict[str, list[Centre]]:
    """Seen (training) centres grouped by vendor, in VENDORS order."""
    out: dict[str, list[Centre]] = {v: [] for v in VENDORS}
    for c in centres:
        if (not c.unseen) == seen:
            out[c.vendor].append(c)
    return out
