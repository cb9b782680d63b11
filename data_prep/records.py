"""One record per subject: what a reader found, before any image is opened.

Readers only parse folders and tables; they never load volumes (that happens in the harmonize
workers, in parallel). A subject the reader can already tell is broken (missing file, unknown
vendor, ED/ES outside the cine) becomes a ``Skip`` instead of a record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from duallora.errors import KitError


@dataclass(frozen=True)
class SubjectRecord:
    """Everything harmonization needs to find and label one subject's ED and ES volumes.

    Frames are given either as separate 3D files (``ed_image``; ACDC frame files, M&Ms-2) or as
    0-based indices into the 4D cine (``cine`` + ``ed_index``; M&Ms). ``ed_index``/``es_index``
    are always 0-based, -1 when the dataset does not give them (M&Ms-2).
    """

    subject_id: str
    dataset: str
    vendor: str
    centre: str
    scanner: str
    field_strength: str
    pathology: str
    label: int
    split_official: str
    ed_index: int
    es_index: int
    cine: str = ""
    cine_seg: str = ""
    ed_image: str = ""
    es_image: str = ""
    ed_seg: str = ""
    es_seg: str = ""
    height: float | None = None
    weight: float | None = None

    @property
    def source_path(self) -> str:
        """The file or folder a user should look at when this subject fails."""
        return self.ed_image or self.cine

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Skip:
    """A subject that could not be harmonized, and why (one row of ``skipped.csv``)."""

    subject_id: str
    source_path: str
    reason: str


def existing(path: Path) -> str:
    """``str(path)`` when the file exists, else the empty string (optional files)."""
    return str(path) if path.is_file() else ""


def read_table(csv: Path, **options: object) -> tuple[pd.DataFrame, list[list[str]]]:
    """A dataset table and its malformed lines (too many fields), instead of failing on them.

    One broken line must cost only its own subject: pandas would otherwise reject the whole
    table. An unreadable file is a ``KitError`` naming it.
    """
    bad: list[list[str]] = []

    def keep_bad(fields: list[str]) -> None:
        bad.append(fields)
        return None

    try:
        table = pd.read_csv(csv, engine="python", on_bad_lines=keep_bad, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) \
            as err:
        raise KitError(f"{csv}: unreadable table ({type(err).__name__}: {err})") from err
    return table, bad
