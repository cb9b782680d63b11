"""Vocabulary shared by readers, harmonization and phantoms: vendors, labels, pathologies.

The three public datasets spell the same things differently (vendor letters in M&Ms, company
names in M&Ms-2, label values reversed between ACDC and the M&Ms family). Everything is mapped
here, once, to the kit's vocabulary: vendors ``Siemens | Philips | GE | Canon`` and segmentation
labels ``1 LV blood pool, 2 LV myocardium, 3 RV blood pool``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from duallora.errors import KitError

VENDORS: tuple[str, ...] = ("Siemens", "Philips", "GE", "Canon")
DATASETS: tuple[str, ...] = ("acdc", "mnms", "mnms2")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def phantom_raw_roots(folder: Path) -> dict[str, Path]:
    """The three dataset roots inside a phantom folder (``python -m data_prep phantoms --out
    FOLDER`` writes them, docs/CONTRACTS.md), keyed as ``harmonize_datasets`` takes them."""
    folder = Path(folder)
    return {"acdc": folder / "ACDC" / "database", "mnms": folder / "MnM" / "OpenDataset",
            "mnms2": folder / "MnM2"}

# Unified segmentation labels (M&Ms convention).
LV, MYO, RV = 1, 2, 3

# ACDC stores 1 RV, 2 MYO, 3 LV: swap RV and LV, keep MYO.
ACDC_TO_UNIFIED = np.array([0, RV, MYO, LV], dtype=np.uint8)

HEALTHY_CODE = "NOR"

# Every spelling met in the three datasets (and the phantom population cohort), lower-cased.
_VENDOR_ALIASES: dict[str, str] = {
    "a": "Siemens", "siemens": "Siemens", "siemens healthineers": "Siemens",
    "b": "Philips", "philips": "Philips", "philips medical systems": "Philips",
    "philips healthcare": "Philips",
    "c": "GE", "ge": "GE", "ge medical systems": "GE", "ge healthcare": "GE",
    "general electric": "GE",
    "d": "Canon", "canon": "Canon", "canon medical systems": "Canon", "toshiba": "Canon",
    "toshiba medical systems": "Canon",
}


def normalize_vendor(raw: object) -> str:
    """Map a vendor spelling (``A``, ``SIEMENS``, ``GE MEDICAL SYSTEMS``...) to a client name.

    Raises ``KitError`` for anything unknown, so the subject is skipped with a clear reason
    instead of silently becoming a fifth client.
    """
    key = " ".join(str(raw).strip().lower().split())
    if key in _VENDOR_ALIASES:
        return _VENDOR_ALIASES[key]
    raise KitError(f"unknown vendor {raw!r} (expected one of Siemens, Philips, GE, Canon or the "
                   "M&Ms letters A-D)")


# Pathology codes each dataset uses (dataset papers: Bernard 2018, Campello 2021, Martin-Isla
# 2023); M&Ms-2 also lists HHD and MINF, the extra codes of the phantom population cohort. A code
# outside its dataset's list is a typo or another dataset's code: skipped, never guessed at.
PATHOLOGY_CODES: dict[str, tuple[str, ...]] = {
    "acdc": ("NOR", "MINF", "DCM", "HCM", "RV"),
    "mnms": ("NOR", "DCM", "HCM", "HHD", "ARV", "AHS", "IHD", "LV", "LVNC", "OTHER"),
    "mnms2": ("NOR", "LV", "HCM", "ARR", "FALL", "CIA", "RV", "TRI", "HHD", "MINF"),
}


def check_pathology(dataset: str, code: object) -> str:
    """``code`` stripped, or ``KitError`` naming it when ``dataset`` has no such code (it would
    otherwise become label 1, "pathological", silently)."""
    text = str(code).strip()
    if text.upper() not in PATHOLOGY_CODES[dataset]:
        raise KitError(f"unknown pathology code {text!r} (the {dataset} codes are "
                       f"{', '.join(PATHOLOGY_CODES[dataset])})")
    return text


def binary_label(pathology: str) -> int:
    """The classification target: 0 for a normal heart (``NOR``), 1 for any pathology."""
    return 0 if str(pathology).strip().upper() == HEALTHY_CODE else 1


def acdc_to_unified(seg: np.ndarray) -> np.ndarray:
    """Relabel an ACDC mask (1 RV, 2 MYO, 3 LV) to the unified 1 LV, 2 MYO, 3 RV."""
    seg = np.asarray(seg)
    values = np.unique(seg)
    if values.size and (values.min() < 0 or values.max() > 3):
        raise KitError(f"segmentation holds labels {values.tolist()}, expected 0..3")
    return ACDC_TO_UNIFIED[seg.astype(np.intp)]
