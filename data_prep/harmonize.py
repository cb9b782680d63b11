"""``python -m data_prep harmonize``: raw ACDC / M&Ms / M&Ms-2 -> one vendor-split cohort.

Output (see docs/INTERNALS.md): ``OUT/metadata.csv``, ``OUT/skipped.csv`` and
``OUT/volumes/<dataset>/<subject>/{ed,es}[_seg].nii.gz``. Subjects are processed in worker
processes; each subject's files are written atomically and a small ``done.json`` is written last,
so a re-run only redoes subjects that did not finish (or were skipped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from tqdm.auto import tqdm

from data_prep.conventions import acdc_to_unified
from data_prep.isolation import Died, run_isolated
from data_prep.readers import read_acdc, read_mnms, read_mnms2
from data_prep.records import Skip, SubjectRecord
from data_prep.split import federated_split
from duallora.errors import KitError

if TYPE_CHECKING:  # preprocess imports torch/MONAI: workers import it, the CLI need not
    from data_prep.preprocess import Harmonized

log = logging.getLogger(__name__)

METADATA_COLUMNS = [
    "subject_id", "dataset", "vendor", "centre", "scanner", "field_strength", "pathology",
    "label", "split", "split_official", "ed_frame", "es_frame", "ed_path", "es_path",
    "ed_seg_path", "es_seg_path", "crop_source", "source_cine", "height", "weight",
]
SKIPPED_COLUMNS = ["subject_id", "source_path", "reason"]
DONE_FILE = "done.json"


def collect_records(acdc: Path | None, mnms: Path | None,
                    mnms2: Path | None) -> tuple[list[SubjectRecord], list[Skip]]:
    """Run the reader of every dataset root given; duplicate subject ids are skipped."""
    records: list[SubjectRecord] = []
    skips: list[Skip] = []
    for root, reader in ((acdc, read_acdc), (mnms, read_mnms), (mnms2, read_mnms2)):
        if root is not None:
            try:
                found, bad = reader(Path(root))
            except OSError as err:  # an unreadable dataset root: one line naming it
                raise KitError(f"{root}: cannot be read ({type(err).__name__}: {err})") from err
            records += found
            skips += bad
    if not records and not skips:
        raise KitError("no dataset given: pass at least one of --acdc, --mnms, --mnms2")
    seen: set[str] = set()
    unique: list[SubjectRecord] = []
    for record in records:
        if record.subject_id in seen:
            skips.append(Skip(record.subject_id, record.source_path,
                              f"{record.source_path}: duplicate subject id {record.subject_id} "
                              "(a subject with this id was already read; this one is left out)"))
        else:
            seen.add(record.subject_id)
            unique.append(record)
    return unique, skips


def _subject_dir(out: Path, subject_id: str) -> Path:
    return out / "volumes" / subject_id


def _volume_paths(subject_id: str) -> dict[str, str]:
    base = f"volumes/{subject_id}"
    return {"ed_path": f"{base}/ed.nii.gz", "es_path": f"{base}/es.nii.gz",
            "ed_seg_path": f"{base}/ed_seg.nii.gz", "es_seg_path": f"{base}/es_seg.nii.gz"}


def source_fingerprint(record: SubjectRecord) -> str:
    """What a subject's volumes are made from: every input file (path, size, modification
    time) and the ED/ES choice. A re-run redoes the subject when any of it changed, so the
    volumes always match the ``metadata.csv`` written beside them."""
    files = []
    for path in (record.cine, record.cine_seg, record.ed_image, record.es_image, record.ed_seg,
                 record.es_seg):
        if path:
            try:
                stat = os.stat(path)
                files.append([path, stat.st_size, stat.st_mtime_ns])
            except OSError:
                files.append([path, -1, -1])
    key = json.dumps([record.dataset, record.ed_index, record.es_index, files])
    return hashlib.sha256(key.encode()).hexdigest()


def _completed(out: Path, record: SubjectRecord) -> dict | None:
    """The volume part of a finished subject's row, or None when it must be (re)done."""
    done = _subject_dir(out, record.subject_id) / DONE_FILE
    if not done.is_file():
        return None
    try:
        info = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    wanted = [info.get(k, "") for k in ("ed_path", "es_path", "ed_seg_path", "es_seg_path")]
    if info.get("source") != record.source_path or not all((out / p).is_file()
                                                           for p in wanted if p):
        return None
    if info.get("fingerprint") != source_fingerprint(record):  # a source or ED/ES changed
        return None
    return info


def harmonize_subject(record: SubjectRecord, out: Path) -> dict | Skip:
    """Harmonize one subject; every failure is returned as a ``Skip`` (never raised)."""
    try:
        return _harmonize_and_save(record, out)
    except KitError as err:
        return Skip(record.subject_id, record.source_path, str(err))
    except Exception as err:  # keep the run alive, but say exactly what broke
        return Skip(record.subject_id, record.source_path,
                    f"{record.source_path}: {type(err).__name__}: {err}")


def _harmonize_and_save(record: SubjectRecord, out: Path) -> dict:
    from data_prep.preprocess import harmonize_frames
    from data_prep.volumes import read_frames

    frames = read_frames(record)
    if record.dataset == "acdc":  # ACDC masks are 1 RV, 2 MYO, 3 LV
        frames.ed_seg = acdc_to_unified(frames.ed_seg) if frames.ed_seg is not None else None
        frames.es_seg = acdc_to_unified(frames.es_seg) if frames.es_seg is not None else None
    return save_harmonized(harmonize_frames(frames), record.subject_id, record.source_path, out,
                           fingerprint=source_fingerprint(record))


def save_harmonized(result: Harmonized, subject_id: str, source: str, out: Path,
                    fingerprint: str = "") -> dict:
    """Write one harmonized subject's volumes (and ``done.json``); returns its path columns.

    Shared by the raw-file path above and the phantoms' in-memory fast path, so both write
    exactly the same files for the same arrays.
    """
    from data_prep.volumes import save_nifti_atomic

    paths = _volume_paths(subject_id)
    save_nifti_atomic(result.ed, result.affine, out / paths["ed_path"])
    save_nifti_atomic(result.es, result.affine, out / paths["es_path"])
    if result.ed_seg is not None and result.es_seg is not None:
        save_nifti_atomic(result.ed_seg, result.affine, out / paths["ed_seg_path"])
        save_nifti_atomic(result.es_seg, result.affine, out / paths["es_seg_path"])
    else:
        paths["ed_seg_path"] = paths["es_seg_path"] = ""
    info = {**paths, "crop_source": result.crop_source, "source": source}
    if fingerprint:
        info["fingerprint"] = fingerprint
    # written last: its presence marks the subject complete for a re-run
    _write_text_atomic(_subject_dir(out, subject_id) / DONE_FILE, json.dumps(info))
    return info


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def one_torch_thread() -> None:
    """Worker-process initializer: one torch thread each (the processes already use every
    core). Also used by the phantoms' in-memory paths (``data_prep.phantoms.workers``)."""
    import torch

    torch.set_num_threads(1)


def _run_all(records: list[SubjectRecord], out: Path,
             workers: int) -> Iterator[tuple[SubjectRecord, dict | Skip]]:
    """Each subject in its own worker process (``isolation``): one that dies (out of memory, a
    crash in native code) is a skipped subject with the reason, never a lost run."""
    import data_prep.preprocess  # noqa: F401  (imported once here, inherited by forked workers)

    # Always one torch thread in the child, even with one worker: a child forked from a
    # process whose OpenMP pool already ran (an earlier torch op, e.g. in a notebook or a test
    # worker) deadlocks in its first parallel region; with one thread torch never enters one.
    initializer = one_torch_thread
    tasks = [(record, out) for record in records]
    for index, result in run_isolated(harmonize_subject, tasks, workers, initializer):
        record = records[index]
        if isinstance(result, Died):
            result = Skip(record.subject_id, record.source_path,
                          f"{record.source_path}: {result.describe()}")
        yield record, result


def _row(record: SubjectRecord, info: dict) -> dict:
    return {
        "subject_id": record.subject_id, "dataset": record.dataset, "vendor": record.vendor,
        "centre": record.centre, "scanner": record.scanner,
        "field_strength": record.field_strength, "pathology": record.pathology,
        "label": record.label, "split_official": record.split_official,
        "ed_frame": record.ed_index, "es_frame": record.es_index,
        "ed_path": info["ed_path"], "es_path": info["es_path"],
        "ed_seg_path": info["ed_seg_path"], "es_seg_path": info["es_seg_path"],
        "crop_source": info["crop_source"],
        "source_cine": str(Path(record.cine).resolve()) if record.cine else "",
        "height": record.height, "weight": record.weight,
    }


def _remove_stale_volumes(out: Path, skips: list[Skip]) -> None:
    """A subject harmonized by an earlier run and skipped now (its source changed into
    something unusable) loses its old volumes: nothing in ``out`` may describe a subject that
    ``metadata.csv`` does not list."""
    import shutil

    volumes = (out / "volumes").resolve()
    for skip in skips:
        folder = _subject_dir(out, skip.subject_id).resolve()
        if folder.is_dir() and volumes in folder.parents:
            shutil.rmtree(folder)


def unaccounted(records: list[SubjectRecord], rows: list[dict],
                skips: list[Skip]) -> list[Skip]:
    """A ``Skip`` for every subject that ended neither harmonized nor skipped: the safety net
    of the promise that every subject of the input is in one of the two CSVs."""
    seen = {row["subject_id"] for row in rows} | {skip.subject_id for skip in skips}
    return [Skip(r.subject_id, r.source_path, f"{r.source_path}: no result came back for this "
                 "subject (internal error; please report)") for r in records
            if r.subject_id not in seen]


def summarize(metadata: pd.DataFrame) -> pd.DataFrame:
    """Subjects per vendor, label and federated split (the table printed after a run)."""
    table = (metadata.groupby(["vendor", "label", "split"]).size()
             .unstack("split", fill_value=0)
             .reindex(columns=["train", "val", "test"], fill_value=0))
    table["total"] = table.sum(axis=1)
    return table


def harmonize_datasets(*, acdc: Path | None = None, mnms: Path | None = None,
                       mnms2: Path | None = None, out: Path, seed: int = 0,
                       workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Harmonize every subject of the given roots into ``out``; returns the metadata table.

    Raises ``KitError`` when no subject at all could be harmonized (bad roots, all broken).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, skips = collect_records(acdc, mnms, mnms2)
    rows: list[dict] = []
    todo: list[SubjectRecord] = []
    for record in records:
        info = _completed(out, record)
        if info is None:
            todo.append(record)
        else:
            rows.append(_row(record, info))
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = tqdm(total=len(records), initial=len(rows), desc="harmonize", unit="subject",
               disable=not progress)
    for record, result in _run_all(todo, out, n_workers):
        if isinstance(result, Skip):
            skips.append(result)
            log.warning("skipped %s: %s", result.subject_id, result.reason)
        else:
            rows.append(_row(record, result))
        bar.update(1)
    bar.close()
    skips += unaccounted(records, rows, skips)
    _remove_stale_volumes(out, skips)
    # workers finish in any order: sort, so the same input gives the same skipped.csv
    skips.sort(key=lambda skip: (skip.subject_id, skip.source_path, skip.reason))
    skipped = pd.DataFrame([s.__dict__ for s in skips], columns=SKIPPED_COLUMNS)
    _write_text_atomic(out / "skipped.csv", skipped.to_csv(index=False))
    if not rows:
        raise KitError(f"no subject could be harmonized ({len(skips)} skipped, reasons in "
                       f"{out / 'skipped.csv'})")
    metadata = pd.DataFrame(rows).sort_values("subject_id").reset_index(drop=True)
    metadata["split"] = federated_split(metadata, seed)
    metadata = metadata[METADATA_COLUMNS]
    _write_text_atomic(out / "metadata.csv", metadata.to_csv(index=False))
    if progress:
        print(f"harmonized {len(metadata)} subjects into {out} ({len(skips)} skipped)")
        print(summarize(metadata).to_string())
    return metadata
