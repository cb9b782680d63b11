"""Phantom cohort v1: counts, determinism, anatomy, vendor appearance, population, bytes."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from data_prep.conventions import LV, MYO, RV
from data_prep.harmonize import harmonize_datasets
from data_prep.phantoms import render_phantom, write_population_cohort
from data_prep.phantoms.anatomy import Scan, render_stack, sample_heart
from data_prep.phantoms.appearance import STYLES
from data_prep.phantoms.cohort_v1 import cohort_specs, render_ed_es, scaled_counts
from data_prep.readers import read_mnms, read_mnms2


def test_full_scale_counts_mirror_the_real_datasets() -> None:
    counts = scaled_counts(1.0)
    assert counts[("acdc", "Siemens")] == {g: 30 for g in ("NOR", "MINF", "DCM", "HCM", "RV")}
    per_vendor = {v: sum(counts[("mnms", v)].values()) for v in STYLES}
    assert per_vendor == {"Siemens": 95, "Philips": 125, "GE": 75, "Canon": 50}
    assert sum(sum(counts[("mnms2", v)].values()) for v in ("Siemens", "Philips", "GE")) == 360
    specs = cohort_specs(1.0, seed=0)
    assert len(specs) == 150 + 345 + 360
    assert len({(s.dataset, s.code) for s in specs}) == len(specs)


def test_small_scales_keep_both_labels_for_every_vendor() -> None:
    for scale in (0.01, 0.03, 0.1):
        specs = cohort_specs(scale, seed=3)
        per = collections.Counter((s.vendor, s.pathology == "NOR") for s in specs)
        assert all(per[(v, healthy)] >= 3 for v in STYLES for healthy in (True, False)), per


def test_phantoms_are_deterministic_for_a_seed() -> None:
    spec = cohort_specs(0.03, seed=5)[-1]
    a, b = render_phantom(spec), render_phantom(spec)
    np.testing.assert_array_equal(a.cine, b.cine)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert cohort_specs(0.03, seed=5) == cohort_specs(0.03, seed=5)
    assert cohort_specs(0.03, seed=5) != cohort_specs(0.03, seed=6)


def test_ed_es_render_is_the_whole_renders_ed_and_es_value_for_value() -> None:
    """``render_ed_es`` skips the other phases but draws the same random numbers."""
    specs = cohort_specs(0.03, seed=5)
    for spec in (specs[0], specs[-1]):  # ACDC (ED at frame 0) and M&Ms-2
        whole = render_phantom(spec)
        two, ed, es = render_ed_es(spec)
        assert (ed, es) == (whole.ed_index, whole.es_index)
        assert (two.ed_index, two.es_index) == (0, 1)
        np.testing.assert_array_equal(two.cine, whole.cine[..., [ed, es]])
        np.testing.assert_array_equal(two.labels, whole.labels[..., [ed, es]])
        np.testing.assert_array_equal(two.affine, whole.affine)
        assert (two.scanner, two.field_strength, two.height, two.weight) == \
            (whole.scanner, whole.field_strength, whole.height, whole.weight)


def _measure(pathology: str, seed: int) -> dict[str, float]:
    """ED/ES LV volume, wall thickness and RV volume of one heart on a coarse, quick grid."""
    rng = np.random.default_rng(seed)
    heart = sample_heart(pathology, rng)
    scan = Scan(shape=(96, 96), spacing=2.0, thickness=10.0, n_slices=11, n_frames=6,
                ed_index=0, es_fraction=0.4, centre=(0.0, 0.0), septum_angle=np.pi,
                top_u=heart.length + 4, myo_level=0.3)
    _, labels = render_stack(heart, scan, rng)
    ed, es = labels[..., scan.ed_index], labels[..., scan.es_index]
    lv_ed, lv_es = (ed == LV).sum(), (es == LV).sum()
    return {"lv_ed": lv_ed, "ef": 1 - lv_es / lv_ed,
            "wall": (ed == MYO).sum() / max(lv_ed, 1), "rv_ed": (ed == RV).sum() / lv_ed}


def test_pathologies_change_anatomy_like_the_disease() -> None:
    draws = {p: [_measure(p, seed) for seed in range(8)] for p in ("NOR", "DCM", "HCM", "RV")}
    mean = {p: {k: float(np.mean([d[k] for d in v])) for k in v[0]} for p, v in draws.items()}
    assert mean["DCM"]["lv_ed"] > 1.3 * mean["NOR"]["lv_ed"]  # dilated
    assert mean["DCM"]["ef"] < mean["NOR"]["ef"] - 0.15  # poorly contracting
    assert mean["HCM"]["wall"] > 1.5 * mean["NOR"]["wall"]  # thick walls, small cavity
    assert mean["HCM"]["lv_ed"] < mean["NOR"]["lv_ed"]
    assert mean["RV"]["rv_ed"] > 1.3 * mean["NOR"]["rv_ed"]  # dilated right ventricle
    for values in draws.values():  # every heart ejects: ES cavity smaller than ED
        assert all(0.05 < d["ef"] < 0.95 for d in values)
    # classes overlap: the largest normal heart is bigger than the smallest dilated one
    assert max(d["lv_ed"] for d in draws["NOR"]) > min(d["lv_ed"] for d in draws["DCM"]) * 0.8


def test_vendors_differ_in_appearance(phantom_raw_dir: Path) -> None:
    records, _ = read_mnms(phantom_raw_dir / "MnM" / "OpenDataset")
    stats = collections.defaultdict(list)
    for record in records:
        image = nib.load(record.cine)
        stats[record.vendor].append((float(np.asarray(image.dataobj).max()),
                                     float(image.header.get_zooms()[0]), image.shape[3]))
    peak = {v: np.median([s[0] for s in rows]) for v, rows in stats.items()}
    assert peak["Canon"] > 4000 > peak["Siemens"] > peak["Philips"]  # bit depth / range
    spacing = {v: np.median([s[1] for s in rows]) for v, rows in stats.items()}
    assert spacing["Canon"] < spacing["Siemens"]
    affines = [nib.load(r.cine).affine[:3, :3] for r in records]
    oblique = [not np.allclose(a / np.linalg.norm(a, axis=0), np.eye(3), atol=1e-3)
               for a in affines]
    assert all(oblique)  # every stack is tilted against the scanner axes, as in M&Ms


def test_population_cohort_harmonizes_without_id_collisions(tmp_path: Path,
                                                             harmonized_dir: Path) -> None:
    root = write_population_cohort(tmp_path / "pop", n_subjects=4, seed=0, workers=1)
    records, skips = read_mnms2(root)
    assert len(records) == 4 and not skips
    meta = harmonize_datasets(mnms2=root, out=tmp_path / "h", seed=0, workers=1, progress=False)
    clients = pd.read_csv(harmonized_dir / "metadata.csv")
    assert set(meta["subject_id"]).isdisjoint(clients["subject_id"])
    assert meta["subject_id"].str.match(r"mnms2/1\d{5}$").all()
    big = write_population_cohort(tmp_path / "pop2", n_subjects=1, seed=0, workers=1)
    assert read_mnms2(big)[0][0].subject_id == "mnms2/100001"


# sha256 over (relative path, bytes) of every file, computed on main (68b2338) before the
# generator became a subpackage: v1 must stay byte-identical, past results are pinned to it.
# (Pinned to this environment's numpy/scipy/nibabel: a library upgrade that changes floating
# point results would show up here first, which is the point.)
V1_CLIENTS_SHA256 = "eb078f88bffaef0b87dd06a58554b964a77ed41ce47cc999799a27c8155d0844"
V1_POPULATION_SHA256 = "4d1fe1e3d5051a17a26d72be037f17c858d9f8a0b208ecc75db843360882153e"


def tree_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_v1_generator_is_byte_identical_to_main(phantom_raw_dir: Path, tmp_path: Path) -> None:
    # the session cohort is v1 at scale 0.03, seed 0 (tests/conftest.py)
    assert tree_sha256(phantom_raw_dir) == V1_CLIENTS_SHA256
    root = write_population_cohort(tmp_path / "pop", n_subjects=3, seed=0, workers=1)
    assert tree_sha256(root) == V1_POPULATION_SHA256


def test_in_memory_v1_path_gives_the_raw_path_harmonized_cohort(harmonized_dir: Path,
                                                                 tmp_path: Path) -> None:
    """The FM probe's shortcut (tests/test_model_fm.py) builds the cohort the raw layouts and
    their readers give: the session cohort (v1, scale 0.03, seed 0) both ways."""
    from conftest import TEST_COHORT_SCALE, TEST_COHORT_SEED

    from data_prep.phantoms.harmonized_v1 import write_harmonized_v1_cohort

    fast = write_harmonized_v1_cohort(tmp_path / "fast", TEST_COHORT_SCALE, TEST_COHORT_SEED,
                                      workers=2, progress=False)
    raw = pd.read_csv(harmonized_dir / "metadata.csv")
    assert {"Training/Unlabeled"} <= {s.split_folder for s in
                                      cohort_specs(TEST_COHORT_SCALE, TEST_COHORT_SEED)}
    assert (raw["crop_source"] != "mask").any()  # an unlabelled subject is in the comparison
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "fast" / "metadata.csv").drop(columns="source_cine"),
        raw.drop(columns="source_cine"))
    assert len(fast) == len(raw)
    for column in ("ed_path", "es_path", "ed_seg_path", "es_seg_path"):
        for rel in raw[column].dropna():
            assert (tmp_path / "fast" / rel).read_bytes() == (harmonized_dir / rel).read_bytes()
