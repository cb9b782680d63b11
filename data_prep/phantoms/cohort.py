"""The v2 training cohort in the real raw layouts, and everything written beside it.

``write_cohort_v2`` draws the centres (``centres``), fills each centre with subjects at the real
dataset's size and NOR share (scaled), labels them with the centre's rule (``labels``), renders
every frame under the centre's protocol (``acquisition``) and writes ACDC / M&Ms / M&Ms-2 files
exactly as v1 does (same folders, tables and quirks; centre names in Info.cfg ``Centre``,
the M&Ms ``Centre`` column and an extra M&Ms-2 ``CENTRE`` column). Beside it: ``centres.csv``,
``cohort.json`` (generator, seed, scale, shifts), ``headroom.json`` and, unless disabled, the
harmonized balanced test (and validation) cohorts of ``balanced_cohorts``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from data_prep.conventions import ACDC_TO_UNIFIED, VENDORS, phantom_raw_roots
from data_prep.phantoms.acquisition import render_v2
from data_prep.phantoms.centres import Centre, centre_table, centres_by_vendor, draw_centres
from data_prep.phantoms.cohort_v1 import (
    MIN_PER_LABEL,
    MNMS2_VENDOR_STRING,
    MNMS_CSV,
    MNMS_LETTER,
    _code_suffix,
    _mnms_folder,
)
from data_prep.phantoms.sampling import Draw, draw_quota
from data_prep.phantoms.shifts import Shifts
from data_prep.phantoms.workers import map_in_order

COHORT_FILE = "cohort.json"
CENTRES_FILE = "centres.csv"


@dataclass(frozen=True)
class RawTask:
    """One training subject to render and write: its draw, code and official folder."""

    dataset: str
    code: str
    folder: str  # ACDC training|testing, M&Ms Training/Labeled|..., M&Ms-2 ""
    draw: Draw
    labelled: bool = True


def training_quotas(centres: list[Centre], scale: float,
                    min_per_label: int = MIN_PER_LABEL) -> dict[str, dict[int, int]]:
    """Per seen centre ``{label: n}``: the real size and NOR share at ``scale``.

    Each vendor keeps at least ``min_per_label`` subjects of each label (topped up on its
    largest centre), so every federated split can hold both labels.
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    quotas: dict[str, dict[int, int]] = {}
    for vendor, group in centres_by_vendor(centres).items():
        for c in group:
            n = max(1, int(round(c.size * scale)))
            n_nor = int(round(n * c.pathology_mix.get("NOR", 0.0)))
            quotas[c.name] = {0: n_nor, 1: n - n_nor}
        largest = max(group, key=lambda c: c.size).name
        for label in (0, 1):
            have = sum(quotas[c.name][label] for c in group)
            quotas[largest][label] += max(0, min_per_label - have)
        del vendor
    return quotas


def training_tasks(centres: list[Centre], scale: float, seed: int,
                   min_per_label: int = MIN_PER_LABEL) -> list[RawTask]:
    """Every training subject with its raw-layout code and folder (v1's code conventions)."""
    quotas = training_quotas(centres, scale, min_per_label)
    rng = np.random.default_rng(seed)
    by_name = {c.name: c for c in centres}
    draws = {name: draw_quota(by_name[name], q, seed, "train") for name, q in quotas.items()}
    tasks: list[RawTask] = []
    acdc = [draws[c.name] for c in centres if c.dataset == "acdc" and not c.unseen][0]
    order = [acdc[i] for i in rng.permutation(len(acdc))]
    n_train = int(round(len(order) * 100 / 150))
    for i, draw in enumerate(order):
        tasks.append(RawTask("acdc", f"patient{i + 1:03d}", "training" if i < n_train
                             else "testing", draw))
    index = 0
    for vendor in VENDORS:
        group = [draws[c.name] for c in centres
                 if c.dataset == "mnms" and c.vendor == vendor and not c.unseen]
        if not group:
            continue
        order = [group[0][i] for i in rng.permutation(len(group[0]))]
        for i, draw in enumerate(order):
            index += 1
            folder = _mnms_folder(vendor, i / len(order))
            tasks.append(RawTask("mnms", f"{MNMS_LETTER[vendor]}{index}{_code_suffix(seed, index)}",
                                 folder, draw, folder != "Training/Unlabeled"))
    pool = [d for c in centres if c.dataset == "mnms2" and not c.unseen for d in draws[c.name]]
    for i, j in enumerate(rng.permutation(len(pool))):
        tasks.append(RawTask("mnms2", f"{i + 1:03d}", "", pool[j]))
    return tasks


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def _write_task(task_root: tuple[RawTask, Path]) -> dict[str, Any]:
    """Render one training subject, write its files; returns its row of the dataset's table."""
    task, root = task_root
    scan = render_v2(task.draw, "all")
    ph, latent, centre = scan.phantom, task.draw.latent, task.draw.centre
    if task.dataset == "acdc":
        folder = root / task.folder / task.code
        folder.mkdir(parents=True, exist_ok=True)
        ed, es = ph.ed_index + 1, ph.es_index + 1  # ACDC counts frames from 1
        acdc_labels = np.argsort(ACDC_TO_UNIFIED).astype(np.uint8)[ph.labels]
        _save(ph.cine, ph.affine, folder / f"{task.code}_4d.nii.gz")
        for frame in (ed, es):
            _save(ph.cine[..., frame - 1], ph.affine,
                  folder / f"{task.code}_frame{frame:02d}.nii.gz")
            _save(acdc_labels[..., frame - 1], ph.affine,
                  folder / f"{task.code}_frame{frame:02d}_gt.nii.gz")
        lines = [f"ED: {ed}", f"ES: {es}", f"Group: {task.draw.code}"]
        if latent.seed % 7:  # some real Info.cfg files lack Height or Weight
            lines.append(f"Height: {ph.height}")
        lines.append(f"NbFrame: {ph.cine.shape[3]}")
        if latent.seed % 11:
            lines.append(f"Weight: {ph.weight}")
        lines.append(f"Centre: {centre.name}")
        (folder / "Info.cfg").write_text("\n".join(lines) + "\n")
        return {}
    if task.dataset == "mnms":
        folder = root / task.folder / task.code
        folder.mkdir(parents=True, exist_ok=True)
        _save(ph.cine, ph.affine, folder / f"{task.code}_sa.nii.gz")
        if task.labelled:  # 4D mask, labelled only at ED and ES
            gt = np.zeros_like(ph.labels)
            for frame in (ph.ed_index, ph.es_index):
                gt[..., frame] = ph.labels[..., frame]
            _save(gt, ph.affine, folder / f"{task.code}_sa_gt.nii.gz")
        missing = latent.seed % 9 == 0  # some rows lack height and weight
        return {"External code": task.code, "VendorName": centre.vendor,
                "Vendor": MNMS_LETTER[centre.vendor], "Centre": centre.name,
                "ED": ph.ed_index, "ES": ph.es_index, "Age": latent.age,
                "Pathology": task.draw.code, "Sex": latent.sex,
                "Height": np.nan if missing else ph.height,
                "Weight": np.nan if missing else ph.weight}
    folder = root / "dataset" / task.code
    folder.mkdir(parents=True, exist_ok=True)
    name = task.code
    _save(ph.cine, ph.affine, folder / f"{name}_SA_CINE.nii.gz")
    for phase, frame in (("ED", ph.ed_index), ("ES", ph.es_index)):
        _save(ph.cine[..., frame], ph.affine, folder / f"{name}_SA_{phase}.nii.gz")
        _save(ph.labels[..., frame], ph.affine, folder / f"{name}_SA_{phase}_gt.nii.gz")
        mid = ph.cine.shape[1] // 2  # a small long-axis image, so the layout is complete
        _save(ph.cine[:, mid, :, frame][:, :, None], ph.affine,
              folder / f"{name}_LA_{phase}.nii.gz")
        _save(ph.labels[:, mid, :, frame][:, :, None], ph.affine,
              folder / f"{name}_LA_{phase}_gt.nii.gz")
    return {"SUBJECT_CODE": int(name), "DISEASE": task.draw.code,
            "VENDOR": MNMS2_VENDOR_STRING[centre.vendor], "SCANNER": ph.scanner,
            "FIELD": ph.field_strength, "CENTRE": centre.name}


def _run(tasks: list[tuple[RawTask, Path]], workers: int | None) -> list[dict[str, Any]]:
    """Rows in task order; the files do not depend on the number of workers."""
    return map_in_order(_write_task, tasks, workers, "phantoms v2")


def write_training_cohort(out: Path, centres: list[Centre], scale: float, seed: int,
                          workers: int | None = None,
                          min_per_label: int = MIN_PER_LABEL) -> dict[str, int]:
    """Write the three raw trees under ``out``; returns subjects per dataset."""
    out = Path(out)
    roots = phantom_raw_roots(out)
    tasks = training_tasks(centres, scale, seed, min_per_label)
    rows = _run([(t, roots[t.dataset]) for t in tasks], workers)
    mnms_root = roots["mnms"]
    for folder in ("Training/Labeled", "Training/Unlabeled", "Validation", "Testing"):
        (mnms_root / folder).mkdir(parents=True, exist_ok=True)
    mnms = [r for t, r in zip(tasks, rows, strict=True) if t.dataset == "mnms"]
    pd.DataFrame(mnms).to_csv(mnms_root / MNMS_CSV, index=True)  # the unnamed first column
    (roots["acdc"] / "testing").mkdir(parents=True, exist_ok=True)
    (roots["acdc"] / "training").mkdir(parents=True, exist_ok=True)
    roots["mnms2"].mkdir(parents=True, exist_ok=True)
    mnms2 = pd.DataFrame([r for t, r in zip(tasks, rows, strict=True) if t.dataset == "mnms2"])
    if not mnms2.empty:
        mnms2 = mnms2.sort_values("SUBJECT_CODE")
    padding = ("," * (max(len(mnms2.columns), 1) - 1) + "\n") * 20  # the real file's empty rows
    (roots["mnms2"] / "dataset_information.csv").write_text(mnms2.to_csv(index=False) + padding)
    return {d: sum(t.dataset == d for t in tasks) for d in roots}


def write_cohort_info(out: Path, centres: list[Centre], shifts: Shifts, seed: int,
                      extra: dict[str, Any]) -> None:
    """``centres.csv`` and ``cohort.json``: what was drawn, to read every result against."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    centre_table(centres).to_csv(out / CENTRES_FILE, index=False)
    info = {"generator": "v2", "seed": seed, "shifts": shifts.as_dict(),
            "shift_spec": shifts.spec(), **extra}
    (out / COHORT_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def cohort_centres(shifts: Shifts, seed: int) -> list[Centre]:
    return draw_centres(shifts, seed)
