"""M&Ms-2 reader: Siemens, Philips and GE (and Canon in the phantom population cohort).

Quirks: ``dataset_information.csv`` may carry many empty trailing rows; ED and ES come as
separate files (``NNN_SA_ED.nii.gz``, ``NNN_SA_ES.nii.gz`` and ``_gt``) with no frame indices;
labels are 1 LV, 2 MYO, 3 RV. The official split follows the subject number (1-160 training,
161-200 validation, 201-360 testing); codes outside it (the population cohort) get ``none``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep.conventions import binary_label, check_pathology, normalize_vendor
from data_prep.records import Skip, SubjectRecord, existing, read_table
from duallora.errors import KitError

CSV_NAME = "dataset_information.csv"
REQUIRED_COLUMNS = ("SUBJECT_CODE", "DISEASE", "VENDOR")


def official_split(code: int) -> str:
    if 1 <= code <= 160:
        return "train"
    if 161 <= code <= 200:
        return "val"
    if 201 <= code <= 360:
        return "test"
    return "none"


def read_mnms2_table(csv: Path) -> pd.DataFrame:
    """The information table without padding rows (rows whose SUBJECT_CODE is empty)."""
    if not csv.is_file():
        raise KitError(f"{csv.parent}: not an M&Ms-2 root (no {CSV_NAME} inside)")
    table, bad = read_table(csv, dtype=str, skip_blank_lines=True)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise KitError(f"{csv}: missing columns {missing}")
    codes = table["SUBJECT_CODE"].fillna("").str.strip()
    table = table.loc[codes != ""].reset_index(drop=True)
    # malformed lines (more fields than the header): skipped by the reader, one by one
    table.attrs["bad_lines"] = [line[0].strip() if line else "" for line in bad]
    return table


def _folder_name(code: str) -> str:
    """Numeric codes are zero-padded to three digits (``1`` -> ``001``), as on disk."""
    return f"{int(float(code)):03d}" if code.replace(".", "", 1).isdigit() else code


def _read_row(row: pd.Series, root: Path, csv: Path) -> SubjectRecord:
    name = _folder_name(str(row["SUBJECT_CODE"]).strip())
    folder = root / "dataset" / name
    ed_image = folder / f"{name}_SA_ED.nii.gz"
    es_image = folder / f"{name}_SA_ES.nii.gz"
    for path in (ed_image, es_image):
        if not path.is_file():
            raise KitError(f"{path}: missing file")
    if pd.isna(row["DISEASE"]) or not str(row["DISEASE"]).strip():
        raise KitError(f"{csv}: subject {name} has no DISEASE")
    try:
        disease = check_pathology("mnms2", row["DISEASE"])
        vendor = normalize_vendor(row["VENDOR"])
    except KitError as err:
        raise KitError(f"{csv}: subject {name}: {err}") from err
    field = str(row.get("FIELD", "") if pd.notna(row.get("FIELD")) else "").strip()
    scanner = str(row.get("SCANNER", "") if pd.notna(row.get("SCANNER")) else "").strip()
    # the real table has no centre; phantom tables add a CENTRE column naming theirs
    centre = str(row.get("CENTRE", "") if pd.notna(row.get("CENTRE")) else "").strip()
    return SubjectRecord(
        subject_id=f"mnms2/{name}", dataset="mnms2", vendor=vendor,
        centre=centre or "unknown", scanner=scanner, field_strength=field, pathology=disease,
        label=binary_label(disease),
        split_official=official_split(int(name)) if name.isdigit() else "none",
        ed_index=-1, es_index=-1, cine=existing(folder / f"{name}_SA_CINE.nii.gz"),
        ed_image=str(ed_image), es_image=str(es_image),
        ed_seg=existing(folder / f"{name}_SA_ED_gt.nii.gz"),
        es_seg=existing(folder / f"{name}_SA_ES_gt.nii.gz"),
    )


def read_mnms2(root: Path) -> tuple[list[SubjectRecord], list[Skip]]:
    """One record per non-empty row of ``dataset_information.csv``."""
    root = Path(root)
    csv = root / CSV_NAME
    table = read_mnms2_table(csv)
    records: list[SubjectRecord] = []
    skips: list[Skip] = []
    for code in table.attrs["bad_lines"]:
        name = _folder_name(code) if code else "unknown"
        skips.append(Skip(f"mnms2/{name}", str(csv), f"{csv}: malformed line for subject "
                          f"{code or '?'} (more fields than the header)"))
    listed: set[str] = {s.subject_id for s in skips}
    for _, row in table.iterrows():
        name = _folder_name(str(row["SUBJECT_CODE"]).strip())
        listed.add(f"mnms2/{name}")
        try:
            records.append(_read_row(row, root, csv))
        except (KitError, ValueError, OSError) as err:
            skips.append(Skip(f"mnms2/{name}", str(root / "dataset" / name), str(err)))
    # a subject folder without a row has no vendor or label: skipped, but never lost
    dataset = root / "dataset"
    folders = sorted(p for p in dataset.iterdir() if p.is_dir()) if dataset.is_dir() else []
    for folder in folders:
        if f"mnms2/{folder.name}" not in listed:
            skips.append(Skip(f"mnms2/{folder.name}", str(folder),
                              f"{folder}: no row for subject {folder.name} in {CSV_NAME}"))
    return records, skips
