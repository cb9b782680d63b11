"""Bad input, fuzzed: a seeded sample of raw files broken in many ways never ends the run.

Every corrupted subject must land in ``skipped.csv`` with a reason naming its file, and every
intact subject must be harmonized. Kinds: truncated gzip, wrong dimensions, NaNs, header
garbage, malformed and empty CSV fields, an unreadable Info.cfg, missing frames, and a
duplicate subject id.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from data_prep.harmonize import harmonize_datasets
from data_prep.readers import read_acdc, read_mnms, read_mnms2

SEED = 20260315
Corruptor = Callable[[Path, np.random.Generator], str]  # returns the fragment the reason names


def _truncate(path: Path, rng: np.random.Generator) -> str:
    data = path.read_bytes()
    path.write_bytes(data[:int(rng.integers(64, len(data) // 2))])
    return path.name


def _wrong_dims(path: Path, rng: np.random.Generator) -> str:
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    flat = data[..., 0] if data.ndim == 4 else data[:, :, 0]  # one dimension too few
    nib.save(nib.Nifti1Image(flat, image.affine), str(path))
    return path.name


def _nans(path: Path, rng: np.random.Generator) -> str:
    image = nib.load(str(path))
    data = np.asarray(image.dataobj).astype(np.float32)
    data[tuple(int(rng.integers(n)) for n in data.shape)] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    return path.name


def _header_garbage(path: Path, rng: np.random.Generator) -> str:
    """Garbage in the datatype field (bytes 70-71); nibabel repairs a bad sizeof_hdr itself."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[70:72] = np.array([rng.integers(3000, 30000)], dtype="<i2").tobytes()  # no such code
    path.write_bytes(gzip.compress(bytes(raw)))
    return path.name


IMAGE_KINDS: dict[str, Corruptor] = {"truncated gzip": _truncate, "wrong dimensions": _wrong_dims,
                                     "NaNs": _nans, "header garbage": _header_garbage}


def _edit_line(csv: Path, field: int, value: str, edit: Callable[[list[str]], list[str] | None],
               duplicate: bool = False) -> str:
    """Apply ``edit`` to the CSV line whose ``field`` equals ``value`` (or duplicate it)."""
    lines = csv.read_text().splitlines()
    for i, line in enumerate(lines):
        cells = line.split(",")
        if len(cells) > field and cells[field].strip() == value:
            if duplicate:
                lines.insert(i + 1, line)
            else:
                lines[i] = ",".join(edit(cells))
            break
    else:
        raise AssertionError(f"{value} not in {csv}")
    csv.write_text("\n".join(lines) + "\n")
    return csv.name


def _corrupt(raw: Path, rng: np.random.Generator) -> tuple[dict[str, str], set[str]]:
    """Break a seeded sample of subjects; ``{subject_id: fragment}`` and duplicated ids."""
    expected: dict[str, str] = {}
    duplicated: set[str] = set()
    # ACDC: the ED frame file, or the Info.cfg
    acdc_records = read_acdc(raw / "ACDC" / "database")[0]
    kinds = [*IMAGE_KINDS, "garbage Info.cfg"]
    picks = rng.permutation(len(acdc_records))[:min(len(kinds), len(acdc_records) - 1)]
    for kind, index in zip(rng.permutation(kinds), picks, strict=False):
        record = acdc_records[index]
        if kind == "garbage Info.cfg":
            cfg = Path(record.ed_image).parent / "Info.cfg"
            cfg.write_bytes(rng.integers(0, 256, size=200, dtype=np.uint8).tobytes())
            expected[record.subject_id] = "Info.cfg"
        else:
            expected[record.subject_id] = IMAGE_KINDS[kind](Path(record.ed_image), rng)
    # M&Ms: the 4D cine, or the subject's row of the information table
    mnms_root = raw / "MnM" / "OpenDataset"
    mnms_records = read_mnms(mnms_root)[0]
    csv = next(mnms_root.glob("*.csv"))
    kinds = [*IMAGE_KINDS, "malformed row", "empty ED", "missing frames", "duplicate id"]
    picks = rng.permutation(len(mnms_records))[:min(len(kinds), len(mnms_records) - 1)]
    for kind, index in zip(rng.permutation(kinds), picks, strict=False):
        record = mnms_records[index]
        code = record.subject_id.split("/")[1]
        if kind in IMAGE_KINDS:
            expected[record.subject_id] = IMAGE_KINDS[kind](Path(record.cine), rng)
        elif kind == "malformed row":
            expected[record.subject_id] = _edit_line(csv, 1, code, lambda c: [*c, "x", "y"])
        elif kind == "empty ED":
            expected[record.subject_id] = _edit_line(
                csv, 1, code, lambda c: [*c[:5], "", *c[6:]])
        elif kind == "missing frames":  # the cine stops before ES
            cine = nib.load(record.cine)
            data = np.asarray(cine.dataobj)[..., :max(record.es_index, record.ed_index)]
            nib.save(nib.Nifti1Image(data, cine.affine), record.cine)
            expected[record.subject_id] = Path(record.cine).name
        else:
            _edit_line(csv, 1, code, lambda c: c, duplicate=True)
            duplicated.add(record.subject_id)
            expected[record.subject_id] = Path(record.cine).name
    # M&Ms-2: the ED file, the ES file, or the subject's row
    mnms2_root = raw / "MnM2"
    mnms2_records = read_mnms2(mnms2_root)[0]
    csv2 = mnms2_root / "dataset_information.csv"
    kinds = [*IMAGE_KINDS, "malformed row", "empty DISEASE", "missing ES file"]
    picks = rng.permutation(len(mnms2_records))[:min(len(kinds), len(mnms2_records) - 1)]
    for kind, index in zip(rng.permutation(kinds), picks, strict=False):
        record = mnms2_records[index]
        number = str(int(record.subject_id.split("/")[1]))
        if kind in IMAGE_KINDS:
            expected[record.subject_id] = IMAGE_KINDS[kind](Path(record.ed_image), rng)
        elif kind == "malformed row":
            expected[record.subject_id] = _edit_line(csv2, 0, number, lambda c: [*c, "z"])
        elif kind == "empty DISEASE":
            expected[record.subject_id] = _edit_line(csv2, 0, number,
                                                     lambda c: [c[0], "", *c[2:]])
        else:
            Path(record.es_image).unlink()
            expected[record.subject_id] = Path(record.es_image).name
    return expected, duplicated


def test_fuzzed_raw_files_are_skipped_with_reasons(phantom_raw_dir: Path,
                                                   tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(phantom_raw_dir, raw)
    intact_before = {r.subject_id for reader, root in (
        (read_acdc, raw / "ACDC" / "database"), (read_mnms, raw / "MnM" / "OpenDataset"),
        (read_mnms2, raw / "MnM2")) for r in reader(root)[0]}
    expected, duplicated = _corrupt(raw, np.random.default_rng(SEED))
    assert len(expected) >= 15  # a third or more of the cohort, every image kind in every dataset
    meta = harmonize_datasets(acdc=raw / "ACDC" / "database", mnms=raw / "MnM" / "OpenDataset",
                              mnms2=raw / "MnM2", out=tmp_path / "h", seed=0, workers=2,
                              progress=False)
    skipped = pd.read_csv(tmp_path / "h" / "skipped.csv")
    reasons = skipped.groupby("subject_id")["reason"].apply(" | ".join)
    for subject, fragment in expected.items():
        assert subject in reasons.index, f"{subject} ({fragment}) is not in skipped.csv"
        assert fragment in reasons[subject], (subject, fragment, reasons[subject])
    broken = set(expected) - duplicated
    assert set(meta["subject_id"]).isdisjoint(broken)
    # everything else, and the first copy of a duplicated subject, was harmonized
    assert set(meta["subject_id"]) == intact_before - broken
    assert set(skipped["subject_id"]) == set(expected)
