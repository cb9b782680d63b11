"""The v2 pretraining population: every cine frame of many subjects from every v2 centre.

An unlabelled population for MAE pretraining (``python -m data_prep population``, then
``python -m duallora pretrain --frames-population DIR``). Subjects come from ``n_centre_sets``
independent draws of the v2 centres (``draw_centres``), seen *and* unseen centres alike, at each
centre's natural prevalence, so the encoder sees the whole range of protocols and populations
the generator can produce, not the particular centres of one cohort seed.

Seed rule: centre set ``i`` of population seed ``s`` is drawn with cohort seed
``-(1 + 1000 * s + i)``. Cohort seeds are non-negative (``--seed`` accepts 0 .. 2**31 - 1),
so a centre set never equals the centres of any ordinary cohort, and the map is one-to-one
while ``n_centre_sets <= 1000``.

**No labels**: the centres' diagnostic labels are dropped when drawing (``label=-1``,
``code=""``) and nothing about disease is written. The files hold each frame as model input
(uint8) and per-slice LV / MYO / RV areas from the generator's masks (anatomy, for an optional
auxiliary loss):

- ``shard_NNNNN.npz``: ``frames`` (F, H, W, D) uint8, ``areas`` (F, 3, D) int16 and ``rows``
  (the shard's index rows as JSON); written atomically, so a re-run skips finished shards;
- ``index.csv``: one row per subject (subject_id, centre, vendor, n_frames, shard, first_row,
  ed_frame, es_frame, crop_source); ``first_row`` is the subject's first frame in its shard;
- ``population.json``: how it was drawn (seed, sizes, rule, image_size, crop_size, shifts).

Every subject is rendered from its own seed, so the files' contents do not depend on the
number of workers.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_prep.phantoms.centres import draw_centres
from data_prep.phantoms.sampling import Draw, allocate, draw_natural
from data_prep.phantoms.shifts import Shifts, default_shifts
from duallora.errors import KitError

GENERATOR = "v2"
PURPOSE = "population"
MAX_CENTRE_SETS = 1000
SEED_RULE = "centre set i of population seed s is drawn with cohort seed -(1 + 1000*s + i)"
INDEX_COLUMNS = ["subject_id", "centre", "vendor", "n_frames", "shard", "first_row",
                 "ed_frame", "es_frame", "crop_source"]
# what must match for a re-run to resume an existing folder (population.json keys)
SPEC_KEYS = ("generator", "seed", "n_subjects", "n_centre_sets", "image_size", "crop_size",
             "shard_subjects", "shifts")


@dataclass(frozen=True)
class PopulationSubject:
    """One unlabelled subject of the population and where it comes from."""

    subject_id: str
    centre_set: int
    draw: Draw  # label -1, code "": the centre's annotation is discarded


def centre_set_seed(seed: int, index: int) -> int:
    """Cohort seed of centre set ``index`` (negative: never an ordinary cohort's seed)."""
    return -(1 + MAX_CENTRE_SETS * seed + index)


def population_draws(n_subjects: int, seed: int, n_centre_sets: int = 20,
                     shifts: Shifts | None = None) -> list[PopulationSubject]:
    """``n_subjects`` unlabelled subjects over ``n_centre_sets`` draws of every v2 centre.

    ``n_subjects`` is shared over all (set, centre) pairs by centre size (largest remainder);
    an unseen centre, which has no real dataset behind it, counts as an average seen centre.
    Within a centre, subjects come at its natural prevalence (``draw_natural``).
    """
    if not 1 <= n_centre_sets <= MAX_CENTRE_SETS:
        raise KitError(f"--centre-sets must be in [1, {MAX_CENTRE_SETS}], got {n_centre_sets}")
    if n_subjects < 1:
        raise KitError(f"--subjects must be at least 1, got {n_subjects}")
    shifts = shifts or default_shifts()
    pairs = []
    for index in range(n_centre_sets):
        centres = draw_centres(shifts, centre_set_seed(seed, index))
        seen = [c.size for c in centres if not c.unseen]
        average = sum(seen) / len(seen)
        pairs += [(index, c, float(c.size) if not c.unseen else average) for c in centres]
    counts = allocate(n_subjects, [weight for _, _, weight in pairs])
    subjects = []
    for (index, centre, _), n in zip(pairs, counts, strict=True):
        for k, draw in enumerate(draw_natural(centre, n, centre_set_seed(seed, index), PURPOSE)):
            subjects.append(PopulationSubject(f"population/{index:03d}-{centre.name}-{k:04d}",
                                              index, replace(draw, label=-1, code="")))
    return subjects


def population_spec(n_subjects: int, seed: int, n_centre_sets: int, image_size: Sequence[int],
                    crop_size: int, shard_subjects: int, shifts: Shifts) -> dict[str, Any]:
    """What identifies a population folder (``population.json`` before any size is known)."""
    return {"generator": GENERATOR, "seed": seed, "n_subjects": n_subjects,
            "n_centre_sets": n_centre_sets, "image_size": [int(s) for s in image_size],
            "crop_size": int(crop_size), "shard_subjects": shard_subjects,
            "shifts": shifts.as_dict(), "shift_spec": shifts.spec(), "rule": SEED_RULE,
            "labels": "none: an unlabelled population (frames and anatomy areas only)"}


def shard_path(out: Path, shard: int) -> Path:
    return Path(out) / f"shard_{shard:05d}.npz"


def _subject_frames(job: tuple[PopulationSubject, tuple[int, ...], int]) -> dict[str, Any]:
    """Render one subject's whole cine and turn every frame into model input (worker side).

    A failure comes back as ``{"skip": reason}``, so one bad subject never ends a long run.
    """
    from data_prep.phantoms.acquisition import render_v2
    from data_prep.phantoms.population_frames import cine_to_model_input
    from data_prep.volumes import Frames

    subject, image_size, crop_size = job
    try:
        scan = render_v2(subject.draw, "all")
        ph = scan.phantom
        # the voxel size as a NIfTI header would give it (float32), as the ED/ES cohorts read it
        affine = ph.affine.astype(np.float32).astype(np.float64)
        zooms = Frames(ph.cine[..., 0], ph.cine[..., 1], None, None, affine).zooms
        result = cine_to_model_input(ph.cine.astype(np.float32), ph.labels, zooms,
                                     scan.ed_frame, scan.es_frame, image_size, crop_size)
    except Exception as err:  # keep the run alive; the reason goes to population.json
        return {"skip": f"{subject.subject_id}: {type(err).__name__}: {err}"}
    return {"frames": result.frames, "areas": result.areas, "ed_frame": scan.ed_frame,
            "es_frame": scan.es_frame, "crop_source": result.crop_source}


def _write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Temporary file beside ``path``, then rename: a killed run never leaves half a file.
    Readable by others (``mkstemp`` alone gives 0600), as the population is meant to be shared."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    _write_bytes_atomic(path, buffer.getbuffer())


def _write_text_atomic(path: Path, text: str) -> None:
    _write_bytes_atomic(path, text.encode())


def _write_shard(out: Path, shard: int, subjects: Sequence[PopulationSubject],
                 results: Sequence[dict[str, Any]], frame_shape: tuple[int, ...]) -> None:
    rows, frames, areas = [], [], []
    first = 0
    for subject, result in zip(subjects, results, strict=True):
        centre = subject.draw.centre
        if "skip" in result:
            rows.append({"subject_id": subject.subject_id, "skip": result["skip"]})
            continue
        n = len(result["frames"])
        rows.append({"subject_id": subject.subject_id, "centre": centre.name,
                     "vendor": centre.vendor, "n_frames": n, "shard": shard,
                     "first_row": first, "ed_frame": result["ed_frame"],
                     "es_frame": result["es_frame"], "crop_source": result["crop_source"]})
        frames.append(result["frames"])
        areas.append(result["areas"])
        first += n
    depth = frame_shape[-1]
    _save_npz_atomic(shard_path(out, shard),
                     frames=np.concatenate(frames) if frames else
                     np.zeros((0, *frame_shape), np.uint8),
                     areas=np.concatenate(areas) if areas else np.zeros((0, 3, depth), np.int16),
                     rows=np.array(json.dumps(rows)))


def read_shard_rows(out: Path, shard: int) -> list[dict[str, Any]]:
    """A finished shard's rows (its subjects, skipped ones with a ``skip`` reason)."""
    with np.load(shard_path(out, shard)) as data:
        return json.loads(str(data["rows"]))


def _check_resumable(out: Path, spec: dict[str, Any]) -> None:
    """Refuse to add shards to a folder written for another population."""
    path = out / "population.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise KitError(f"{path}: unreadable ({err}); remove the folder or pick another --out") \
            from err
    differing = [key for key in SPEC_KEYS if old.get(key) != spec[key]]
    if differing:
        raise KitError(f"{path}: written for another population (differs in "
                       f"{', '.join(differing)}); pick another --out or remove it")


def _results(pool: ProcessPoolExecutor | None, jobs: list[Any]) -> Iterator[dict[str, Any]]:
    if pool is None:
        return map(_subject_frames, jobs)
    return pool.map(_subject_frames, jobs)


def _pool(workers: int) -> ProcessPoolExecutor | None:
    """Forked workers with one torch thread each (``workers.harmonize_in_order``'s pattern)."""
    if workers <= 1:
        return None
    import multiprocessing as mp

    import data_prep.preprocess  # noqa: F401  (loaded once, inherited by forked workers)
    from data_prep.harmonize import one_torch_thread

    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=one_torch_thread)


def write_population_frames(out: Path, subjects: Sequence[PopulationSubject],
                            workers: int | None = None, progress: bool = True,
                            image_size: Sequence[int] = (64, 64, 16), crop_size: int = 128,
                            shard_subjects: int = 64, *, seed: int = 0, n_centre_sets: int = 20,
                            shifts: Shifts | None = None) -> dict[str, Any]:
    """Write ``subjects`` (from :func:`population_draws`) into ``out``; returns population.json.

    ``seed``, ``n_centre_sets`` and ``shifts`` are the draw's own arguments, recorded so that a
    re-run into the same folder resumes only when it asks for the same population.
    """
    if shard_subjects < 1:
        raise KitError(f"--shard-subjects must be at least 1, got {shard_subjects}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image_size = tuple(int(s) for s in image_size)
    spec = population_spec(len(subjects), seed, n_centre_sets, image_size, crop_size,
                           shard_subjects, shifts or default_shifts())
    _check_resumable(out, spec)
    _write_text_atomic(out / "population.json", json.dumps({**spec, "complete": False},
                                                           indent=2) + "\n")
    shards = [list(subjects[i:i + shard_subjects])
              for i in range(0, len(subjects), shard_subjects)]
    todo = [s for s in range(len(shards)) if not shard_path(out, s).is_file()]
    n_workers = max(1, min(workers or os.cpu_count() or 1, sum(len(shards[s]) for s in todo)))
    pool = _pool(n_workers) if todo else None
    bar = tqdm(total=len(subjects), desc="population frames", unit="subject",
               disable=not progress, initial=len(subjects) - sum(len(shards[s]) for s in todo))
    try:
        for shard in todo:
            jobs = [(subject, image_size, int(crop_size)) for subject in shards[shard]]
            results = []
            for result in _results(pool, jobs):
                results.append(result)
                bar.update(1)
            _write_shard(out, shard, shards[shard], results, image_size)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    return _finish(out, spec, len(shards))


def _finish(out: Path, spec: dict[str, Any], n_shards: int) -> dict[str, Any]:
    """index.csv and the complete population.json, from the shards on disk."""
    rows = [row for shard in range(n_shards) for row in read_shard_rows(out, shard)]
    kept = [row for row in rows if "skip" not in row]
    if not kept:
        raise KitError(f"{out}: no subject of the population could be rendered")
    index = pd.DataFrame(kept, columns=INDEX_COLUMNS)
    _write_text_atomic(out / "index.csv", index.to_csv(index=False))
    n_frames = int(index["n_frames"].sum())
    frame_bytes = int(np.prod(spec["image_size"])) + 2 * 3 * spec["image_size"][2]
    info = {**spec, "complete": True, "n_shards": n_shards,
            "sizes": {"subjects": len(kept), "frames": n_frames,
                      "skipped": len(rows) - len(kept),
                      "per_centre": dict(sorted(Counter(index["centre"]).items())),
                      "per_vendor": dict(sorted(Counter(index["vendor"]).items())),
                      "frames_per_subject": round(n_frames / len(kept), 2),
                      "uncompressed_bytes_per_subject": round(n_frames * frame_bytes
                                                              / len(kept))},
            "skipped": [row["skip"] for row in rows if "skip" in row]}
    _write_text_atomic(out / "population.json", json.dumps(info, indent=2) + "\n")
    return info
