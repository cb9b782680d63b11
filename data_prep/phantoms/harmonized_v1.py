"""The v1 client cohort straight into the harmonized layout, without raw files.

``write_phantom_cohort(generator="v1")`` followed by ``harmonize_datasets`` compresses every
subject's whole cine into three raw layouts and then reads it back, although harmonization
keeps only ED and ES: most of the cost of a large cohort (the FM probe cohort has 430
subjects). This path renders only the same subjects' ED and ES frames (same specs, same seeds:
``render_ed_es``, value for value ``render_phantom``'s frames), hands them, exactly as the raw
layout's reader would load them, to the same ``harmonize_frames`` and ``save_harmonized``, and
builds the row the reader's record would give.
``tests/test_data_phantoms.py`` checks that both paths give the same metadata and volumes.

What it cannot give: ``source_cine`` (nothing raw exists; it is empty) and the raw files
themselves. Use the raw path whenever the raw layouts are what is being exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.conventions import binary_label
from data_prep.harmonize import (
    METADATA_COLUMNS,
    _row,
    _write_text_atomic,
    save_harmonized,
)
from data_prep.phantoms.cohort_v1 import (
    MNMS_CENTRES,
    Phantom,
    SubjectSpec,
    cohort_specs,
    render_ed_es,
)
from data_prep.phantoms.workers import harmonize_in_order, harmonized_rows
from data_prep.records import Skip, SubjectRecord
from data_prep.split import federated_split

# the official split each raw layout's reader reads off the subject's folder or code
_ACDC_SPLIT = {"training": "train", "testing": "test"}
_MNMS_SPLIT = {"Training/Labeled": "train", "Training/Unlabeled": "train", "Validation": "val",
               "Testing": "test"}


def _mnms2_split(code: str) -> str:
    number = int(code)
    return "train" if number <= 160 else "val" if number <= 200 else "test"


def reader_record(spec: SubjectSpec, ph: Phantom, ed_index: int, es_index: int
                  ) -> SubjectRecord:
    """The record the dataset's reader builds from the files ``cohort_v1`` writes for ``spec``
    (the quirks included: ACDC Info.cfg and M&Ms rows that lack height or weight);
    ``ed_index``/``es_index``: the frames of the whole cine (``render_ed_es``)."""
    common = dict(dataset=spec.dataset, vendor=spec.vendor, pathology=spec.pathology,
                  label=binary_label(spec.pathology))
    if spec.dataset == "acdc":
        return SubjectRecord(
            subject_id=f"acdc/{spec.code}", centre="Dijon", scanner="", field_strength="",
            split_official=_ACDC_SPLIT[spec.split_folder], ed_index=ed_index,
            es_index=es_index, height=ph.height if spec.seed % 7 else None,
            weight=ph.weight if spec.seed % 11 else None, **common)
    if spec.dataset == "mnms":
        centres = MNMS_CENTRES[spec.vendor]
        missing = spec.seed % 9 == 0
        return SubjectRecord(
            subject_id=f"mnms/{spec.code}", centre=centres[spec.seed % len(centres)],
            scanner=spec.vendor, field_strength="", split_official=_MNMS_SPLIT[spec.split_folder],
            ed_index=ed_index, es_index=es_index, height=None if missing else ph.height,
            weight=None if missing else ph.weight, **common)
    return SubjectRecord(
        subject_id=f"mnms2/{spec.code}", centre="unknown", scanner=ph.scanner,
        field_strength=ph.field_strength, split_official=_mnms2_split(spec.code), ed_index=-1,
        es_index=-1, **common)


def _harmonize_one(job: tuple[SubjectSpec, Path]) -> dict | Skip:
    """Render one subject, harmonize its ED/ES in memory; failures become a ``Skip``."""
    from data_prep.preprocess import harmonize_frames
    from data_prep.volumes import Frames

    spec, out = job
    subject_id = f"{spec.dataset}/{spec.code}"
    try:
        ph, ed_index, es_index = render_ed_es(spec)  # the whole cine is never needed here
        record = reader_record(spec, ph, ed_index, es_index)
        labelled = spec.dataset != "mnms" or spec.labelled

        def seg(frame: int) -> np.ndarray | None:
            return ph.labels[..., frame].astype(np.float32) if labelled else None

        frames = Frames(ph.cine[..., ph.ed_index].astype(np.float32),
                        ph.cine[..., ph.es_index].astype(np.float32),
                        seg(ph.ed_index), seg(ph.es_index),
                        # the affine as a NIfTI header stores it (float32), as raw files give
                        ph.affine.astype(np.float32).astype(np.float64))
        info = save_harmonized(harmonize_frames(frames), subject_id, f"phantom:{subject_id}",
                               out)
    except Exception as err:  # one bad subject must not end the cohort
        return Skip(subject_id, f"phantom:{subject_id}", f"{type(err).__name__}: {err}")
    row = _row(record, info)
    row["source_cine"] = ""  # nothing raw was written
    return row


def write_harmonized_v1_cohort(out: Path, scale: float, seed: int, workers: int | None = None,
                               progress: bool = True) -> pd.DataFrame:
    """The harmonized folder (metadata.csv, skipped.csv, volumes/) that
    ``write_phantom_cohort(scale=scale, seed=seed, generator="v1")`` and then
    ``harmonize_datasets(seed=seed)`` would give; returns the metadata table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(spec, out) for spec in cohort_specs(scale, seed)]
    results = harmonize_in_order(_harmonize_one, jobs, workers, "v1 cohort (in memory)",
                                 progress)
    metadata = harmonized_rows(out, results, "subject")
    metadata["split"] = federated_split(metadata, seed)
    metadata = metadata[METADATA_COLUMNS]
    _write_text_atomic(out / "metadata.csv", metadata.to_csv(index=False))
    return metadata
