"""``python -m data_prep phantoms``: a synthetic multi-vendor cohort in the real raw layouts.

At ``--scale 1.0`` the subject counts and per-vendor class mixes mirror the real datasets (ACDC
150 Siemens, 30 per group; M&Ms A 95, B 125, C 75, D 50; M&Ms-2 360 over Siemens, Philips, GE);
smaller scales keep at least three healthy and three diseased subjects per vendor, so every
federated split holds both labels. Every subject is drawn from its own seed, so the cohort is the
same whatever the number of worker processes.

``write_population_cohort`` writes a separate, mostly healthy "population" cohort (all four
vendors, like a UK-Biobank-style pretraining set) in the M&Ms-2 layout, for MAE pretraining.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from data_prep.conventions import ACDC_TO_UNIFIED, HEALTHY_CODE, phantom_raw_roots
from data_prep.phantoms.anatomy import Scan, contraction, render_stack, sample_heart
from data_prep.phantoms.appearance import STYLES, apply_appearance, scanner_affine
from data_prep.phantoms.workers import map_in_order

# (dataset, vendor) -> {pathology: subjects at scale 1.0}
COHORT_MIX: dict[tuple[str, str], dict[str, int]] = {
    ("acdc", "Siemens"): {"NOR": 30, "MINF": 30, "DCM": 30, "HCM": 30, "RV": 30},
    ("mnms", "Siemens"): {"NOR": 21, "DCM": 25, "HCM": 30, "HHD": 9, "ARV": 4, "Other": 6},
    ("mnms", "Philips"): {"NOR": 35, "DCM": 20, "HCM": 40, "HHD": 12, "ARV": 8, "AHS": 5,
                          "IHD": 5},
    ("mnms", "GE"): {"NOR": 20, "DCM": 15, "HCM": 20, "HHD": 8, "ARV": 5, "LVNC": 4, "Other": 3},
    ("mnms", "Canon"): {"NOR": 10, "DCM": 12, "HCM": 15, "HHD": 5, "ARV": 4, "IHD": 4},
    ("mnms2", "Siemens"): {"NOR": 55, "LV": 30, "HCM": 25, "ARR": 20, "FALL": 15, "CIA": 15,
                           "TRI": 6, "RV": 4},
    ("mnms2", "Philips"): {"NOR": 15, "LV": 15, "HCM": 20, "ARR": 10, "FALL": 10, "CIA": 5,
                           "TRI": 3, "RV": 2},
    ("mnms2", "GE"): {"NOR": 30, "LV": 15, "HCM": 15, "ARR": 15, "FALL": 10, "CIA": 10,
                      "TRI": 11, "RV": 4},
}
MIN_PER_LABEL = 3  # per vendor and label, so train/val/test each get one of both labels
MNMS_LETTER = {"Siemens": "A", "Philips": "B", "GE": "C", "Canon": "D"}
MNMS_CENTRES = {"Siemens": ("1", "6"), "Philips": ("2", "3"), "GE": ("4",), "Canon": ("5",)}
MNMS2_VENDOR_STRING = {"Siemens": "SIEMENS", "Philips": "Philips Medical Systems",
                       "GE": "GE MEDICAL SYSTEMS", "Canon": "Canon Medical Systems"}
# share of each vendor in (training, validation); the rest is testing (as in the real release)
MNMS_OFFICIAL_SHARES = {"Siemens": (0.79, 0.05), "Philips": (0.6, 0.08), "GE": (0.33, 0.14),
                        "Canon": (0.0, 0.2)}
MNMS_CSV = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
POPULATION_VENDORS = {"Siemens": 0.4, "Philips": 0.25, "GE": 0.2, "Canon": 0.15}
POPULATION_DISEASE = {"HHD": 0.3, "LV": 0.15, "HCM": 0.15, "MINF": 0.2, "ARR": 0.1, "RV": 0.1}
POPULATION_HEALTHY_SHARE = 0.8
POPULATION_FIRST_CODE = 100001  # six digits: never collides with M&Ms-2 codes 001-360


@dataclass(frozen=True)
class SubjectSpec:
    """What to draw for one phantom subject, and where it goes."""

    dataset: str
    code: str
    vendor: str
    pathology: str
    split_folder: str  # ACDC training|testing, M&Ms Training/Labeled|..., M&Ms-2 ""
    seed: int
    labelled: bool = True


def scaled_counts(scale: float) -> dict[tuple[str, str], dict[str, int]]:
    """Per (dataset, vendor, pathology) counts at ``scale``, topped up to MIN_PER_LABEL."""
    counts = {key: {p: int(round(n * scale)) for p, n in mix.items()}
              for key, mix in COHORT_MIX.items()}
    for vendor in STYLES:
        keys = [k for k in counts if k[1] == vendor]
        for healthy in (True, False):
            cells = [(k, p) for k in keys for p in COHORT_MIX[k]
                     if (p == HEALTHY_CODE) == healthy]
            # top up the most frequent (dataset, pathology) cells of this label first
            cells.sort(key=lambda cell: -COHORT_MIX[cell[0]][cell[1]])
            i = 0
            while sum(counts[k][p] for k, p in cells) < MIN_PER_LABEL:
                key, pathology = cells[i % len(cells)]
                counts[key][pathology] += 1
                i += 1
    return counts


def _subject_seed(seed: int, dataset: str, code: str) -> int:
    return zlib.crc32(f"{seed}/{dataset}/{code}".encode())


def _interleave(pathologies: dict[str, int], rng: np.random.Generator) -> list[str]:
    items = [p for p, n in pathologies.items() for _ in range(n)]
    return [items[i] for i in rng.permutation(len(items))]


def cohort_specs(scale: float, seed: int) -> list[SubjectSpec]:
    """Every subject of the client cohort, with its official-split folder."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    counts = scaled_counts(scale)
    rng = np.random.default_rng(seed)
    specs: list[SubjectSpec] = []
    # ACDC: the first two thirds of each group in training/, the rest in testing/.
    acdc = counts[("acdc", "Siemens")]
    order = _interleave(acdc, rng)
    n_train = int(round(len(order) * 100 / 150))
    for i, pathology in enumerate(order):
        code = f"patient{i + 1:03d}"
        specs.append(SubjectSpec("acdc", code, "Siemens", pathology,
                                 "training" if i < n_train else "testing",
                                 _subject_seed(seed, "acdc", code)))
    # M&Ms: A/B labelled training, C unlabelled training, the rest validation/testing.
    index = 0
    for vendor in ("Siemens", "Philips", "GE", "Canon"):
        order = _interleave(counts[("mnms", vendor)], rng)
        n = len(order)
        for i, pathology in enumerate(order):
            index += 1
            code = f"{MNMS_LETTER[vendor]}{index}{_code_suffix(seed, index)}"
            folder = _mnms_folder(vendor, i / n)
            labelled = folder != "Training/Unlabeled"
            specs.append(SubjectSpec("mnms", code, vendor, pathology, folder,
                                     _subject_seed(seed, "mnms", code), labelled))
    # M&Ms-2: codes 001..N in a shuffled vendor order (the official split follows the code).
    pool = [(v, p) for v in ("Siemens", "Philips", "GE")
            for p in _interleave(counts[("mnms2", v)], rng)]
    for i, j in enumerate(rng.permutation(len(pool))):
        vendor, pathology = pool[j]
        code = f"{i + 1:03d}"
        specs.append(SubjectSpec("mnms2", code, vendor, pathology, "",
                                 _subject_seed(seed, "mnms2", code)))
    return specs


def _mnms_folder(vendor: str, position: float) -> str:
    """Official M&Ms folder by position in the vendor's list (Canon has no training subjects)."""
    first, second = MNMS_OFFICIAL_SHARES[vendor]
    if position < first:
        return "Training/Unlabeled" if vendor == "GE" else "Training/Labeled"
    return "Validation" if position < first + second else "Testing"


def _code_suffix(seed: int, index: int) -> str:
    """M&Ms codes look like ``A0S9V9``: a letter and five random characters."""
    rng = np.random.default_rng(_subject_seed(seed, "mnms-code", str(index)))
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=4))


@dataclass
class Phantom:
    """A rendered subject: stored cine (X, Y, Z, T) int16, labels (unified), frames, affine."""

    cine: np.ndarray
    labels: np.ndarray
    ed_index: int
    es_index: int
    affine: np.ndarray
    scanner: str
    field_strength: str
    height: float
    weight: float


def render_phantom(spec: SubjectSpec) -> Phantom:
    """Draw and render one subject (deterministic for ``spec.seed``)."""
    return _render(spec, ed_es_only=False)[0]


def render_ed_es(spec: SubjectSpec) -> tuple[Phantom, int, int]:
    """``render_phantom``'s ED and ES frames only, at a fraction of the cost.

    Returns a two-frame phantom (ED at 0, ES at 1), value for value the same frames of
    ``render_phantom(spec)`` (every random draw is the same; tests/test_data_phantoms.py
    checks it), and the ED and ES frame indices of the whole cine (what a raw file's reader
    records). For the in-memory path, which never writes the whole cine.
    """
    return _render(spec, ed_es_only=True)


def _render(spec: SubjectSpec, ed_es_only: bool) -> tuple[Phantom, int, int]:
    rng = np.random.default_rng(spec.seed)
    style = STYLES[spec.vendor]
    body = float(np.clip(rng.normal(1.0, 0.07), 0.8, 1.2))
    heart = sample_heart(spec.pathology, rng, body)
    spacing = float(rng.uniform(*style.spacing))
    matrix = int(rng.choice(style.matrices))
    shape = (matrix, int(round(matrix * rng.uniform(0.82, 1.0) / 8) * 8))
    thickness = float(rng.uniform(*style.thickness))
    top_u = heart.length + float(rng.uniform(2, thickness + 5))
    n_slices = int(math.ceil((top_u + rng.uniform(0, 8)) / thickness)) + 1
    n_frames = int(rng.integers(style.frames[0], style.frames[1] + 1))
    ed_index = 0 if spec.dataset == "acdc" or rng.random() < 0.7 else int(rng.integers(n_frames))
    half_fov = min(shape) * spacing / 2
    scan = Scan(shape=shape, spacing=spacing, thickness=thickness, n_slices=n_slices,
                n_frames=n_frames, ed_index=ed_index, es_fraction=float(rng.uniform(0.33, 0.42)),
                centre=(float(rng.uniform(-0.15, 0.15) * half_fov),
                        float(rng.uniform(-0.15, 0.15) * half_fov)),
                septum_angle=float(np.deg2rad(style.septum_angle_deg + rng.normal(0, 10))),
                top_u=top_u, myo_level=1.0 / float(rng.uniform(*style.blood_to_myo)))
    ed, es = scan.ed_index, scan.es_index
    if ed_es_only:  # the frame loop draws nothing random: rendering two phases keeps the stream
        relative, labels = render_stack(heart, replace(scan, n_frames=2), rng,
                                        squeeze=contraction(scan)[[ed, es]])
        cine = apply_appearance(relative, style, spacing, rng, of_cine=(n_frames, (ed, es)))
    else:
        relative, labels = render_stack(heart, scan, rng)
        cine = apply_appearance(relative, style, spacing, rng)
    affine = scanner_affine(style, spacing, thickness, rng, shape)
    height = float(np.clip(rng.normal(170, 9) * body, 140, 205))
    weight = float(np.clip(rng.normal(75, 13) * body ** 2, 40, 150))
    stored_ed, stored_es = (0, 1) if ed_es_only else (ed, es)
    phantom = Phantom(cine, labels, stored_ed, stored_es, affine,
                      str(rng.choice(style.scanners)), str(rng.choice(style.field_strengths)),
                      round(height, 1), round(weight, 1))
    return phantom, ed, es


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def _write_acdc(spec: SubjectSpec, root: Path) -> dict:
    ph = render_phantom(spec)
    folder = root / spec.split_folder / spec.code
    folder.mkdir(parents=True, exist_ok=True)
    ed, es = ph.ed_index + 1, ph.es_index + 1  # ACDC counts frames from 1
    acdc_labels = np.argsort(ACDC_TO_UNIFIED).astype(np.uint8)[ph.labels]
    _save(ph.cine, ph.affine, folder / f"{spec.code}_4d.nii.gz")
    for frame in (ed, es):
        _save(ph.cine[..., frame - 1], ph.affine, folder / f"{spec.code}_frame{frame:02d}.nii.gz")
        _save(acdc_labels[..., frame - 1], ph.affine,
              folder / f"{spec.code}_frame{frame:02d}_gt.nii.gz")
    lines = [f"ED: {ed}", f"ES: {es}", f"Group: {spec.pathology}"]
    # Some real Info.cfg files lack Height or Weight; keep that quirk in a few phantoms.
    if spec.seed % 7:
        lines.append(f"Height: {ph.height}")
    lines.append(f"NbFrame: {ph.cine.shape[3]}")
    if spec.seed % 11:
        lines.append(f"Weight: {ph.weight}")
    (folder / "Info.cfg").write_text("\n".join(lines) + "\n")
    return {}


def _write_mnms(spec: SubjectSpec, root: Path) -> dict:
    ph = render_phantom(spec)
    folder = root / spec.split_folder / spec.code
    folder.mkdir(parents=True, exist_ok=True)
    _save(ph.cine, ph.affine, folder / f"{spec.code}_sa.nii.gz")
    if spec.labelled:  # 4D mask, labelled only at ED and ES
        gt = np.zeros_like(ph.labels)
        for frame in (ph.ed_index, ph.es_index):
            gt[..., frame] = ph.labels[..., frame]
        _save(gt, ph.affine, folder / f"{spec.code}_sa_gt.nii.gz")
    centres = MNMS_CENTRES[spec.vendor]
    missing = spec.seed % 9 == 0  # some rows lack height and weight, as in the real table
    return {"External code": spec.code, "VendorName": spec.vendor,
            "Vendor": MNMS_LETTER[spec.vendor], "Centre": centres[spec.seed % len(centres)],
            "ED": ph.ed_index, "ES": ph.es_index, "Age": 20 + spec.seed % 60,
            "Pathology": spec.pathology, "Sex": "MF"[spec.seed % 2],
            "Height": np.nan if missing else ph.height, "Weight": np.nan if missing else ph.weight}


def _write_mnms2(spec: SubjectSpec, root: Path) -> dict:
    ph = render_phantom(spec)
    folder = root / "dataset" / spec.code
    folder.mkdir(parents=True, exist_ok=True)
    name = spec.code
    _save(ph.cine, ph.affine, folder / f"{name}_SA_CINE.nii.gz")
    for phase, frame in (("ED", ph.ed_index), ("ES", ph.es_index)):
        _save(ph.cine[..., frame], ph.affine, folder / f"{name}_SA_{phase}.nii.gz")
        _save(ph.labels[..., frame], ph.affine, folder / f"{name}_SA_{phase}_gt.nii.gz")
        # A small long-axis image and mask, so the layout is complete (not used by the kit).
        mid = ph.cine.shape[1] // 2
        la = ph.cine[:, mid, :, frame][:, :, None]
        la_gt = ph.labels[:, mid, :, frame][:, :, None]
        _save(la, ph.affine, folder / f"{name}_LA_{phase}.nii.gz")
        _save(la_gt, ph.affine, folder / f"{name}_LA_{phase}_gt.nii.gz")
    return {"SUBJECT_CODE": int(name), "DISEASE": spec.pathology,
            "VENDOR": MNMS2_VENDOR_STRING[spec.vendor], "SCANNER": ph.scanner,
            "FIELD": ph.field_strength}


WRITERS: dict[str, Callable[[SubjectSpec, Path], dict]] = {
    "acdc": _write_acdc, "mnms": _write_mnms, "mnms2": _write_mnms2}


def _write_one(task: tuple[SubjectSpec, Path]) -> dict:
    """Write one subject under its dataset root; returns its row of the dataset's table."""
    spec, root = task
    return WRITERS[spec.dataset](spec, root)


def _write_all(tasks: list[tuple[SubjectSpec, Path]], workers: int | None,
               desc: str) -> list[dict]:
    """Render and write every subject (in worker processes); rows come back in task order."""
    return map_in_order(_write_one, tasks, workers, desc, chunksize=2)


def _write_mnms2_table(rows: list[dict], root: Path, padding_rows: int) -> None:
    """M&Ms-2's table, with the empty padding rows the real file carries."""
    table = pd.DataFrame(rows).sort_values("SUBJECT_CODE")
    text = table.to_csv(index=False) + ",,,,\n" * padding_rows
    (root / "dataset_information.csv").write_text(text)


def write_phantom_cohort(out: Path, scale: float = 1.0, seed: int = 0,
                         workers: int | None = None) -> Path:
    """Write ``out/ACDC/database``, ``out/MnM/OpenDataset`` and ``out/MnM2``; returns ``out``."""
    out = Path(out)
    specs = cohort_specs(scale, seed)
    roots = phantom_raw_roots(out)
    rows = _write_all([(s, roots[s.dataset]) for s in specs], workers, "phantoms")
    mnms = [r for s, r in zip(specs, rows, strict=True) if s.dataset == "mnms"]
    mnms_root = roots["mnms"]
    for folder in ("Training/Labeled", "Training/Unlabeled", "Validation", "Testing"):
        (mnms_root / folder).mkdir(parents=True, exist_ok=True)
    # Written with its index, which is the real file's unnamed first column.
    pd.DataFrame(mnms).to_csv(mnms_root / MNMS_CSV, index=True)
    (roots["acdc"] / "testing").mkdir(parents=True, exist_ok=True)
    roots["mnms2"].mkdir(parents=True, exist_ok=True)
    _write_mnms2_table([r for s, r in zip(specs, rows, strict=True) if s.dataset == "mnms2"],
                       roots["mnms2"], padding_rows=20)
    return out


def population_specs(n_subjects: int, seed: int) -> list[SubjectSpec]:
    """Mostly healthy subjects from all four vendors, codes from POPULATION_FIRST_CODE."""
    rng = np.random.default_rng(zlib.crc32(f"population/{seed}".encode()))
    vendors = list(POPULATION_VENDORS)
    diseases = list(POPULATION_DISEASE)
    specs = []
    for i in range(n_subjects):
        vendor = str(rng.choice(vendors, p=list(POPULATION_VENDORS.values())))
        pathology = HEALTHY_CODE if rng.random() < POPULATION_HEALTHY_SHARE else \
            str(rng.choice(diseases, p=list(POPULATION_DISEASE.values())))
        code = str(POPULATION_FIRST_CODE + i)
        specs.append(SubjectSpec("mnms2", code, vendor, pathology, "",
                                 _subject_seed(seed, "population", code)))
    return specs


def write_population_cohort(out: Path, n_subjects: int, seed: int,
                            workers: int | None = None) -> Path:
    """An unlabelled-use pretraining cohort in the M&Ms-2 layout; returns its root.

    The root (``out/population``) is accepted by ``harmonize_datasets(mnms2=root, ...)``; its
    subject ids (``mnms2/100001``...) cannot collide with the client cohort's.
    """
    if n_subjects < 1:
        raise ValueError("n_subjects must be at least 1")
    root = Path(out) / "population"
    root.mkdir(parents=True, exist_ok=True)
    specs = population_specs(n_subjects, seed)
    rows = _write_all([(s, root) for s in specs], workers, "population phantoms")
    _write_mnms2_table(rows, root, padding_rows=3)
    return root
