"""Image-level headroom, cohort side: which subjects, where they are written, the merged report.

For one cohort seed and shift cell, per vendor: ``n_train`` training subjects at natural
prevalence from the vendor's seen centres (shared by centre size, ``draw_natural(centre, n,
seed, "image-headroom-train")``) and ``n_test`` balanced test subjects
(``draw_balanced(group, n_test, seed, "image-headroom-test")``). Both are rendered at ED/ES and
harmonized with ``write_harmonized_cohort`` into ``OUT/image_headroom/<cell>/seed<S>/{train,
test}``, reused when already there, so features and cohorts are shared between runs.

The probe math lives in ``duallora.model.vendor_headroom`` (arrays in, dict out); this module
never imports a model. :func:`write_image_headroom` writes ``headroom.json`` = the oracle report
plus the ``"image_level"`` key, and :func:`aggregate_seeds` summarizes several seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.conventions import VENDORS
from data_prep.phantoms.centres import Centre, centres_by_vendor, draw_centres
from data_prep.phantoms.headroom import HEADROOM_FILE
from data_prep.phantoms.sampling import Draw, allocate, draw_balanced, draw_natural
from data_prep.phantoms.shifts import Shifts
from duallora.base.markers import read_marker, write_marker
from duallora.errors import KitError

TRAIN_PURPOSE = "image-headroom-train"
TEST_PURPOSE = "image-headroom-test"
IMAGE_HEADROOM_DIR = "image_headroom"
DRAWS_FILE = "draws.json"  # what a cohort folder holds, so a reuse is never a silent mix-up
FEATURE_SETS = ("pixels", "fm")


def cell_name(shifts: Shifts) -> str:
    """Folder name of a shift cell: every family's strength, in order (e.g.
    ``acq1-mix1-label3-nuis1-app1``), so a cell named on the command line and the same
    strengths spelt out share one folder."""
    return "-".join(f"{family}{value:g}" for family, value in shifts.as_dict().items())


def seed_dir(out: Path, shifts: Shifts, seed: int) -> Path:
    return Path(out) / IMAGE_HEADROOM_DIR / cell_name(shifts) / f"seed{seed}"


def draw_train_subjects(centres: list[Centre], n_train: int, seed: int) -> list[Draw]:
    """Per vendor, ``n_train`` subjects at natural prevalence, shared by centre size."""
    draws: list[Draw] = []
    for group in centres_by_vendor(centres).values():
        for centre, n in zip(group, allocate(n_train, [c.size for c in group]), strict=True):
            draws += draw_natural(centre, n, seed, TRAIN_PURPOSE)
    return draws


def draw_test_subjects(centres: list[Centre], n_test: int, seed: int) -> list[Draw]:
    """Per vendor, ``n_test`` balanced subjects from its seen centres."""
    draws: list[Draw] = []
    for group in centres_by_vendor(centres).values():
        draws += draw_balanced(group, n_test, seed, TEST_PURPOSE)
    return draws


def _write_or_reuse(folder: Path, draws: list[Draw], split: str, record: dict[str, Any],
                    workers: int | None, progress: bool) -> Path:
    from data_prep.phantoms.balanced_cohorts import write_harmonized_cohort

    marker = folder / DRAWS_FILE
    if marker.is_file() and (folder / "metadata.csv").is_file():
        if read_marker(marker) != record:
            raise KitError(f"{folder}: holds another image-headroom cohort ({marker.name} "
                           f"differs: other --train-per-vendor / --test-per-vendor?); remove it "
                           "or write elsewhere")
        return folder
    write_harmonized_cohort(folder, draws, split, workers=workers, progress=progress)
    write_marker(marker, record)
    return folder


def build_cohorts(out: Path, shifts: Shifts, seed: int, n_train: int, n_test: int,
                  workers: int | None = None, progress: bool = True) -> tuple[Path, Path]:
    """Render and harmonize (or reuse) the training and test cohorts -> their folders."""
    centres = draw_centres(shifts, seed)
    base = seed_dir(out, shifts, seed)
    common = {"seed": seed, "shifts": shifts.as_dict()}
    train = _write_or_reuse(base / "train", draw_train_subjects(centres, n_train, seed), "train",
                            {**common, "purpose": TRAIN_PURPOSE, "n_per_vendor": n_train},
                            workers, progress)
    test = _write_or_reuse(base / "test", draw_test_subjects(centres, n_test, seed), "test",
                           {**common, "purpose": TEST_PURPOSE, "n_per_vendor": n_test},
                           workers, progress)
    return train, test


def write_image_headroom(oracle: dict[str, Any], image_level: dict[str, Any],
                         folder: Path) -> Path:
    """``folder/headroom.json``: the oracle report untouched plus ``"image_level"``."""
    path = Path(folder) / HEADROOM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**oracle, "image_level": image_level}, indent=2) + "\n")
    return path


def _vendor_rank(vendor: str) -> tuple[int, str]:
    return (VENDORS.index(vendor) if vendor in VENDORS else len(VENDORS), vendor)


def format_image_level(image_level: dict[str, Any]) -> str:
    """The per-vendor table of every feature set."""
    lines = [f"image-level headroom ({image_level['n_train_per_vendor']} train at natural "
             f"prevalence / {image_level['n_test_per_vendor']} balanced test subjects per "
             "vendor)",
             f"{'features':<8} {'vendor':<8} {'per-vendor':>10} {'pooled':>8} {'headroom':>9} "
             f"{'95% interval':>18}"]
    for name, rows in image_level["features"].items():
        for vendor in sorted(set(rows) - {"mean"}, key=_vendor_rank):
            row = rows[vendor]
            lines.append(f"{name:<8} {vendor:<8} {row['ba_per_vendor_probe']:>10.4f} "
                         f"{row['ba_pooled_probe']:>8.4f} {row['headroom']:>+9.4f} "
                         f"[{row['low']:+.4f}, {row['high']:+.4f}]")
        mean = rows["mean"]
        lines.append(f"{name:<8} {'mean':<8} {'':>10} {'':>8} {mean['headroom']:>+9.4f} "
                     f"[{mean['low']:+.4f}, {mean['high']:+.4f}]")
    return "\n".join(lines)


def _spread(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": round(float(array.mean()), 4),
            "sd": round(float(array.std(ddof=1)) if len(array) > 1 else 0.0, 4),
            "min": round(float(array.min()), 4), "max": round(float(array.max()), 4),
            "n_seeds": len(array)}


def aggregate_seeds(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Image-level headroom over cohort seeds: per feature set and vendor (and the mean over
    vendors), the mean over seeds, the SD over seeds (ddof 1; 0 for one seed), min and max."""
    if not reports:
        raise KitError("aggregate_seeds: no headroom reports")
    missing = [r.get("seed") for r in reports if "image_level" not in r]
    if missing:
        raise KitError(f"headroom reports of seeds {missing} have no image_level key "
                       "(run `python -m data_prep headroom --images`)")
    out: dict[str, Any] = {"seeds": [r.get("seed") for r in reports], "features": {}}
    for name in reports[0]["image_level"]["features"]:
        rows: dict[str, list[float]] = {}
        for report in reports:
            for vendor, row in report["image_level"]["features"][name].items():
                rows.setdefault(vendor, []).append(row["headroom"])
        out["features"][name] = {vendor: _spread(values) for vendor, values in rows.items()}
    return out


def read_reports(paths: list[Path]) -> list[dict[str, Any]]:
    """The ``headroom.json`` files of several seeds (a folder means its ``headroom.json``)."""
    reports = []
    for path in paths:
        path = Path(path)
        path = path / HEADROOM_FILE if path.is_dir() else path
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise KitError(f"{path}: unreadable headroom report ({err})") from err
    return reports

