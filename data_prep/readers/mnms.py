"""M&Ms (OpenDataset) reader: vendors A Siemens, B Philips, C GE, D Canon.

Quirks: the information CSV starts with an unnamed index column; ED and ES are 0-based indices
into the 4D ``<code>_sa.nii.gz``; the 4D ``<code>_sa_gt.nii.gz`` is labelled only at ED and ES;
labels are already 1 LV, 2 MYO, 3 RV. ``Training/Unlabeled`` subjects have no segmentation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep.conventions import binary_label, check_pathology, normalize_vendor
from data_prep.records import Skip, SubjectRecord, existing, read_table
from duallora.errors import KitError

CSV_GLOB = "*M&Ms_Dataset_information*.csv"
REQUIRED_COLUMNS = ("External code", "Vendor", "Centre", "ED", "ES", "Pathology")
SPLIT_FOLDERS = {
    "Training/Labeled": "train",
    "Training/Unlabeled": "train",
    "Validation": "val",
    "Testing": "test",
}


def find_mnms_csv(root: Path) -> Path:
    """The dataset information CSV inside the ``OpenDataset/`` root."""
    matches = sorted(Path(root).glob(CSV_GLOB))
    if not matches:
        raise KitError(f"{root}: not an M&Ms OpenDataset root (no {CSV_GLOB} inside)")
    return matches[0]


def read_mnms_table(csv: Path) -> pd.DataFrame:
    """The information table without its unnamed index column, codes as strings.

    Malformed lines (more fields than the header) are left out and listed in
    ``table.attrs["bad_lines"]`` so the reader can skip just those subjects.
    """
    table, bad = read_table(csv, dtype={"External code": str})
    unnamed = [i for i, c in enumerate(table.columns) if str(c).startswith("Unnamed")]
    table = table.loc[:, [c for c in table.columns if not str(c).startswith("Unnamed")]]
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise KitError(f"{csv}: missing columns {missing}")
    table = table.dropna(subset=["External code"])
    code_at = len(unnamed)  # the code is the first named column
    table.attrs["bad_lines"] = [line[code_at].strip() if len(line) > code_at else ""
                                for line in bad]
    return table


def _index_subject_folders(root: Path) -> dict[str, tuple[Path, str]]:
    folders: dict[str, tuple[Path, str]] = {}
    for rel, split in SPLIT_FOLDERS.items():
        base = root / rel
        try:
            subs = list(base.iterdir()) if base.is_dir() else []
        except OSError:  # unreadable split folder: its subjects' rows say "no folder"
            subs = []
        for sub in subs:
            if sub.is_dir():
                folders[sub.name] = (sub, split)
    return folders


def _optional_float(value: object) -> float | None:
    number = pd.to_numeric(value, errors="coerce")
    return None if pd.isna(number) else float(number)


def _read_row(row: pd.Series, folders: dict[str, tuple[Path, str]], csv: Path) -> SubjectRecord:
    code = str(row["External code"]).strip()
    if code not in folders:
        raise KitError(f"{csv}: subject {code} has no folder under Training/, Validation/ or "
                       "Testing/")
    folder, split = folders[code]
    cine = folder / f"{code}_sa.nii.gz"
    if not cine.is_file():
        raise KitError(f"{cine}: missing 4D short-axis cine")
    try:
        ed, es = int(row["ED"]), int(row["ES"])
    except (TypeError, ValueError) as err:
        raise KitError(f"{csv}: subject {code} has non-integer ED/ES") from err
    if ed < 0 or es < 0:
        raise KitError(f"{csv}: subject {code} has negative ED/ES ({ed}, {es}); they are 0-based")
    if pd.isna(row["Pathology"]) or not str(row["Pathology"]).strip():
        raise KitError(f"{csv}: subject {code} has no Pathology")
    try:
        pathology = check_pathology("mnms", row["Pathology"])
        vendor = normalize_vendor(row["Vendor"])
    except KitError as err:
        raise KitError(f"{csv}: subject {code}: {err}") from err
    return SubjectRecord(
        subject_id=f"mnms/{code}", dataset="mnms", vendor=vendor,
        centre=str(row["Centre"]).strip(), scanner=str(row.get("VendorName", "")).strip(),
        field_strength="", pathology=pathology, label=binary_label(pathology),
        split_official=split, ed_index=ed, es_index=es, cine=str(cine),
        cine_seg=existing(folder / f"{code}_sa_gt.nii.gz"),
        height=_optional_float(row.get("Height")), weight=_optional_float(row.get("Weight")),
    )


def read_mnms(root: Path) -> tuple[list[SubjectRecord], list[Skip]]:
    """One record per row of the information CSV whose subject folder exists."""
    root = Path(root)
    csv = find_mnms_csv(root)
    table = read_mnms_table(csv)
    folders = _index_subject_folders(root)
    records: list[SubjectRecord] = []
    skips: list[Skip] = [Skip(f"mnms/{code or 'unknown'}", str(csv),
                              f"{csv}: malformed line for subject {code or '?'} (more fields "
                              "than the header)") for code in table.attrs["bad_lines"]]
    listed: set[str] = set()
    for _, row in table.iterrows():
        code = str(row["External code"]).strip()
        listed.add(code)
        try:
            records.append(_read_row(row, folders, csv))
        except (KitError, OSError) as err:
            source = folders.get(code, (csv, ""))[0]
            skips.append(Skip(f"mnms/{code}", str(source), str(err)))
    listed.update(table.attrs["bad_lines"])
    # a subject folder without a row has no vendor, label or ED/ES: skipped, but never lost
    for code in sorted(set(folders) - listed):
        skips.append(Skip(f"mnms/{code}", str(folders[code][0]),
                          f"{folders[code][0]}: no row for subject {code} in {csv.name}"))
    return records, skips
