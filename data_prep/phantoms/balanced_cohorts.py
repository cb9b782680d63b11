"""Balanced test (and validation) cohorts written straight into the harmonized layout.

Power by construction: per vendor, ``n`` fresh subjects (half NOR, half disease by the centre's
own rule) from the vendor's training centres, shared by centre size, plus ``n`` from the
unseen centre (``unseen_centre = 1``) for testing the global model. Each subject is rendered at
ED and ES only (the renderer gives the same two volumes as a full cine, see
``acquisition.render_v2``) and passed, in memory, through the same ``harmonize_frames`` and
``save_harmonized`` as raw files are; nothing is written in a raw layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep.conventions import VENDORS
from data_prep.harmonize import (
    METADATA_COLUMNS,
    _row,
    _write_text_atomic,
    save_harmonized,
)
from data_prep.phantoms.acquisition import render_v2
from data_prep.phantoms.centres import Centre, centres_by_vendor
from data_prep.phantoms.sampling import Draw, draw_balanced
from data_prep.phantoms.workers import harmonize_in_order, harmonized_rows
from data_prep.records import Skip, SubjectRecord

EXTRA_COLUMNS = ["unseen_centre", "pathology_drawn", "age", "sex"]


def balanced_draws(centres: list[Centre], n_per_vendor: int, n_unseen: int, seed: int,
                   split: str) -> list[Draw]:
    """Every subject of one balanced cohort: seen centres vendor by vendor, then unseen."""
    draws: list[Draw] = []
    for vendor in VENDORS:
        group = centres_by_vendor(centres)[vendor]
        if group and n_per_vendor > 0:
            draws += draw_balanced(group, n_per_vendor, seed, split)
    unseen = [c for c in centres if c.unseen]
    if unseen and n_unseen > 0:
        draws += draw_balanced(unseen, n_unseen, seed, split)
    return draws


def _subject_id(draw: Draw, split: str, k: int) -> str:
    return f"{draw.centre.dataset}/{split}-{draw.centre.name}-{k:04d}"


def _record(draw: Draw, subject_id: str, scan: Any) -> SubjectRecord:
    ph = scan.phantom
    return SubjectRecord(subject_id=subject_id, dataset=draw.centre.dataset,
                         vendor=draw.centre.vendor, centre=draw.centre.name, scanner=ph.scanner,
                         field_strength=ph.field_strength, pathology=draw.code,
                         label=draw.label, split_official="none", ed_index=scan.ed_frame,
                         es_index=scan.es_frame, height=ph.height, weight=ph.weight)


def _harmonize_one(job: tuple[Draw, str, Path]) -> dict | Skip:
    """Render ED/ES of one subject and harmonize it in memory; failures become a ``Skip``."""
    from data_prep.preprocess import harmonize_frames
    from data_prep.volumes import Frames

    draw, subject_id, out = job
    try:
        scan = render_v2(draw, "ed_es")
        ph = scan.phantom
        frames = Frames(ph.cine[..., 0].astype(np.float32), ph.cine[..., 1].astype(np.float32),
                        ph.labels[..., 0].astype(np.int16), ph.labels[..., 1].astype(np.int16),
                        # the affine as a NIfTI header stores it (float32), as raw files give
                        ph.affine.astype(np.float32).astype(np.float64))
        info = save_harmonized(harmonize_frames(frames), subject_id, f"phantom:{subject_id}",
                               out)
    except Exception as err:  # one bad subject must not end the cohort
        return Skip(subject_id, f"phantom:{subject_id}", f"{type(err).__name__}: {err}")
    row = _row(_record(draw, subject_id, scan), info)
    row["source_cine"] = ""  # nothing raw was written
    row.update({"unseen_centre": int(draw.centre.unseen), "pathology_drawn":
                draw.latent.pathology, "age": draw.latent.age, "sex": draw.latent.sex})
    return row


def write_harmonized_cohort(out: Path, draws: list[Draw], split: str,
                            workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Harmonize ``draws`` into ``out`` (metadata.csv, skipped.csv, volumes/); split fixed."""
    if split not in ("train", "val", "test"):
        raise ValueError("split must be train, val or test")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(d, _subject_id(d, split, k), out) for k, d in enumerate(draws)]
    results = harmonize_in_order(_harmonize_one, jobs, workers, f"{split} cohort", progress,
                                 chunksize=4)
    metadata = harmonized_rows(out, results, f"{split} subject")
    metadata["split"] = split
    metadata = metadata[METADATA_COLUMNS + EXTRA_COLUMNS]
    _write_text_atomic(out / "metadata.csv", metadata.to_csv(index=False))
    return metadata
