"""The notebooks' workspace: one cache folder per mode, and the cohort built into it once.

Every notebook receives the same ``data_dir``; ``workspace`` gives it one folder per mode
(``data_dir/quick`` and ``data_dir/full``) holding the phantom cohort in its raw layouts, the
harmonized cohort, the prefix-feature cache and every training run. The phantoms and the
harmonized cohort are built once per setting (``ensure_phantoms``, ``ensure_cohort``) and reused
while the settings match. ``duallora.notebooks.experiments`` re-exports all of it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from data_prep.conventions import phantom_raw_roots
from duallora.base.markers import is_built, read_marker, write_marker

# Phantom cohort size (fraction of the real datasets' subject counts). Quick mode keeps the
# minimum the phantom writer allows (three subjects per vendor and label, 24 in all), which
# still gives every vendor both labels in every federated split.
QUICK_SCALE = 0.01
FULL_SCALE = 0.2
PHANTOM_MARKER = "phantoms.json"
COHORT_MARKER = "cohort.json"


@dataclass(frozen=True)
class Workspace:
    """The per-mode cache folder shared by every notebook of one series."""

    root: Path
    quick: bool
    seed: int

    @property
    def raw(self) -> Path:
        return self.root / "phantoms"

    @property
    def harmonized(self) -> Path:
        return self.root / "harmonized"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def prefix_cache(self) -> Path:
        return self.root / "prefix_cache"

    @property
    def default_scale(self) -> float:
        return QUICK_SCALE if self.quick else FULL_SCALE


def workspace(data_dir: str | Path, quick: bool, seed: int = 0) -> Workspace:
    """``data_dir/quick`` or ``data_dir/full`` (created), for this seed."""
    root = Path(data_dir).expanduser().resolve() / ("quick" if quick else "full")
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root, bool(quick), int(seed))


# -- data ------------------------------------------------------------------------------------
def ensure_phantoms(ws: Workspace, scale: float | None = None) -> Path:
    """The phantom cohort in the raw ACDC / M&Ms / M&Ms-2 layouts, written once per setting."""
    from data_prep.phantoms import write_phantom_cohort

    wanted = {"scale": float(scale or ws.default_scale), "seed": ws.seed}
    if is_built(ws.raw / PHANTOM_MARKER, wanted):
        return ws.raw
    if ws.raw.exists():
        shutil.rmtree(ws.raw)
    # v1 until the benchmark issue moves the demo to v2 (README numbers are v1's)
    write_phantom_cohort(ws.raw, scale=wanted["scale"], seed=ws.seed, generator="v1")
    write_marker(ws.raw / PHANTOM_MARKER, wanted)
    return ws.raw


def ensure_cohort(ws: Workspace, scale: float | None = None, *, acdc: str | Path | None = None,
                  mnms: str | Path | None = None, mnms2: str | Path | None = None) -> Path:
    """The harmonized cohort (``metadata.csv`` + volumes), built once and then reused.

    With no real root given, the phantom cohort is written first and harmonized; ``scale=None``
    reuses the cohort already built (at any scale), else builds the mode's default. With real
    roots, those are harmonized instead (into ``harmonized_real``, never mixed with phantoms).
    """
    from data_prep.harmonize import harmonize_datasets

    real = {k: str(Path(v).resolve()) for k, v in
            (("acdc", acdc), ("mnms", mnms), ("mnms2", mnms2)) if v}
    if real:
        out = ws.root / "harmonized_real"
        wanted: dict[str, Any] = {"roots": real, "seed": ws.seed}
        roots = {k: Path(v) for k, v in real.items()}
    else:
        out = ws.harmonized
        if scale is None:  # reuse whatever scale notebook 01 built, else the mode default
            built = (read_marker(out / COHORT_MARKER) or {}).get("settings", {})
            scale = built.get("phantom_scale") if built.get("seed") == ws.seed else None
        wanted = {"phantom_scale": float(scale or ws.default_scale), "seed": ws.seed}
        roots = phantom_raw_roots(ws.raw)
    marker = read_marker(out / COHORT_MARKER)
    if marker is not None and marker.get("settings") == wanted \
            and (out / "metadata.csv").is_file():
        return out
    if not real:
        ensure_phantoms(ws, wanted["phantom_scale"])
    if marker is not None and marker.get("settings") != wanted and out.exists():
        shutil.rmtree(out)  # built from other settings: start clean, never mix cohorts
    harmonize_datasets(out=out, seed=ws.seed, **roots)
    write_marker(out / COHORT_MARKER, {"settings": wanted})
    return out


def dataset_roots(ws: Workspace, *, acdc: str | Path | None = None,
                  mnms: str | Path | None = None, mnms2: str | Path | None = None
                  ) -> dict[str, Path]:
    """The raw roots the cohort came from: the real ones when given, else the phantoms'."""
    real = {k: Path(v) for k, v in (("acdc", acdc), ("mnms", mnms), ("mnms2", mnms2)) if v}
    return real or phantom_raw_roots(ws.raw)


def cohort_is_ready(ws: Workspace) -> bool:
    return (ws.harmonized / COHORT_MARKER).is_file()


def subject_records(roots: dict[str, Path]) -> dict[str, Any]:
    """``subject_id -> data_prep.records.SubjectRecord`` for the raw dataset roots (no image is
    read: the readers only parse folders and tables)."""
    from data_prep.harmonize import collect_records

    records, _ = collect_records(roots.get("acdc"), roots.get("mnms"), roots.get("mnms2"))
    return {record.subject_id: record for record in records}


def intensity_samples(metadata: pd.DataFrame, harmonized: Path, records: dict[str, Any],
                      per_vendor: int = 3, voxels: int = 20000, seed: int = 0) -> pd.DataFrame:
    """ED voxel intensities of a few subjects per vendor, before and after harmonization.

    Returns long rows ``vendor, subject_id, stage (raw|harmonized), intensity``; raw values are
    in the scanner's own units, harmonized ones in [0, 1].
    """
    import nibabel as nib
    import numpy as np

    from data_prep.volumes import read_frames

    rng = np.random.default_rng(seed)
    rows = []
    for vendor, part in metadata.groupby("vendor", sort=True):
        chosen = part.sort_values("subject_id").head(per_vendor)
        for _, row in chosen.iterrows():
            record = records.get(row["subject_id"])
            after = np.asarray(nib.load(harmonized / row["ed_path"]).dataobj, dtype=np.float32)
            after = after / 255.0 if after.max() > 1.0 else after
            stages = [("harmonized", after.ravel())]
            if record is not None:
                stages.insert(0, ("raw", read_frames(record).ed.ravel()))
            for stage, values in stages:
                pick = rng.choice(values.size, size=min(voxels, values.size), replace=False)
                rows.append(pd.DataFrame({"vendor": vendor, "subject_id": row["subject_id"],
                                          "stage": stage, "intensity": values[pick]}))
    return pd.concat(rows, ignore_index=True)
