"""ACDC reader (all Siemens, Dijon).

Quirks: ``Info.cfg`` gives ED and ES as 1-based frame numbers (frame 1 is the first volume of the
4D cine); the frame files are named with those numbers (``patient001_frame01.nii.gz``); labels
are 1 RV, 2 MYO, 3 LV (converted to the unified convention by harmonization, see
``data_prep.conventions``). Height and Weight may be missing.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.conventions import binary_label
from data_prep.records import Skip, SubjectRecord, existing
from duallora.errors import KitError

ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
OFFICIAL_SPLIT = {"training": "train", "testing": "test"}


def find_acdc_root(root: Path) -> Path:
    """The folder holding ``training/``/``testing/``; the download's parent folder works too."""
    root = Path(root)
    for candidate in (root, root / "database", root / "ACDC" / "database"):
        if any((candidate / part).is_dir() for part in OFFICIAL_SPLIT):
            return candidate
    raise KitError(f"{root}: not an ACDC root (no training/ or testing/ folder inside, nor in "
                   "database/)")


def parse_info_cfg(path: Path) -> dict[str, str]:
    """``key: value`` lines of an ACDC ``Info.cfg`` (keys as written, values stripped)."""
    info: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def _optional_float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _read_patient(folder: Path, split: str) -> SubjectRecord:
    name = folder.name
    cfg = folder / "Info.cfg"
    if not cfg.is_file():
        raise KitError(f"{cfg}: missing Info.cfg")
    info = parse_info_cfg(cfg)
    try:
        ed, es, n_frames = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
        group = info["Group"].upper()
    except (KeyError, ValueError) as err:
        raise KitError(f"{cfg}: needs integer ED, ES, NbFrame and a Group ({err})") from err
    if group not in ACDC_GROUPS:
        raise KitError(f"{cfg}: unknown Group {group!r} (expected one of {', '.join(ACDC_GROUPS)})")
    for key, frame in (("ED", ed), ("ES", es)):
        if not 1 <= frame <= n_frames:
            raise KitError(f"{cfg}: {key}={frame} is outside frames 1..{n_frames} (1-based)")
    cine = folder / f"{name}_4d.nii.gz"
    ed_image = folder / f"{name}_frame{ed:02d}.nii.gz"
    es_image = folder / f"{name}_frame{es:02d}.nii.gz"
    if not (ed_image.is_file() and es_image.is_file()) and not cine.is_file():
        raise KitError(f"{ed_image}: missing ED/ES frame files and no 4D cine {cine.name}")
    has_frames = ed_image.is_file() and es_image.is_file()
    return SubjectRecord(
        # real Info.cfg files have no Centre key (all Dijon); phantom ones name their centre
        subject_id=f"acdc/{name}", dataset="acdc", vendor="Siemens",
        centre=info.get("Centre", "") or "Dijon",
        scanner="", field_strength="", pathology=group, label=binary_label(group),
        split_official=split, ed_index=ed - 1, es_index=es - 1,
        cine=existing(cine),
        ed_image=str(ed_image) if has_frames else "",
        es_image=str(es_image) if has_frames else "",
        ed_seg=existing(folder / f"{name}_frame{ed:02d}_gt.nii.gz") if has_frames else "",
        es_seg=existing(folder / f"{name}_frame{es:02d}_gt.nii.gz") if has_frames else "",
        height=_optional_float(info.get("Height")), weight=_optional_float(info.get("Weight")),
    )


def read_acdc(root: Path) -> tuple[list[SubjectRecord], list[Skip]]:
    """One record per ``patientNNN`` folder under ``training/`` and ``testing/``."""
    base = find_acdc_root(root)
    records: list[SubjectRecord] = []
    skips: list[Skip] = []
    for part, split in OFFICIAL_SPLIT.items():
        folder = base / part
        if not folder.is_dir():
            continue
        for patient in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                records.append(_read_patient(patient, split))
            except KitError as err:
                skips.append(Skip(f"acdc/{patient.name}", str(patient), str(err)))
            except OSError as err:  # an unreadable folder or Info.cfg: skipped, not lost
                skips.append(Skip(f"acdc/{patient.name}", str(patient),
                                  f"{patient}: cannot be read ({type(err).__name__}: {err})"))
    return records, skips
