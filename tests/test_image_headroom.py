"""Image-level headroom: the probe math on planted rules, the seed summary, the subjects drawn,
and `python -m data_prep headroom --images` end to end on a few dozen rendered subjects."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_prep.cli import main as data_prep_main
from data_prep.phantoms.centres import draw_centres
from data_prep.phantoms.image_headroom import (
    aggregate_seeds,
    cell_name,
    draw_test_subjects,
    draw_train_subjects,
)
from data_prep.phantoms.shifts import parse_shifts
from duallora.errors import KitError
from duallora.model.vendor_headroom import image_headroom


def _vendor_data(rng: np.random.Generator, vendors: dict[str, int], n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` subjects per vendor; label = sign * x0 + noise > 0 with the vendor's sign."""
    xs, ys, vs = [], [], []
    for vendor, sign in vendors.items():
        x = rng.normal(size=(n, 5))
        ys.append((sign * x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int))
        xs.append(x)
        vs += [vendor] * n
    return np.concatenate(xs), np.concatenate(ys), np.array(vs)


def test_a_flipped_rule_gives_its_vendor_large_headroom() -> None:
    rng = np.random.default_rng(0)
    rules = {"A": 1, "B": -1, "C": 1}  # B labels by the opposite rule
    train = _vendor_data(rng, rules, 300)
    test = _vendor_data(rng, rules, 200)
    rows = image_headroom(*train, *test)
    assert rows["B"]["headroom"] > 0.5 and rows["B"]["low"] > 0.3
    assert rows["B"]["ba_per_vendor_probe"] > 0.85
    for vendor in ("A", "C"):
        assert abs(rows[vendor]["headroom"]) < 0.1
    mean = rows["mean"]
    assert mean["headroom"] == pytest.approx(
        np.mean([rows[v]["headroom"] for v in rules]), abs=1e-4)
    assert mean["low"] > 0 and mean["low"] < mean["headroom"] < mean["high"]


def test_one_shared_rule_gives_no_headroom() -> None:
    rng = np.random.default_rng(1)
    rules = {"A": 1, "B": 1, "C": 1, "D": 1}
    train = _vendor_data(rng, rules, 500)
    test = _vendor_data(rng, rules, 400)
    rows = image_headroom(*train, *test)
    for vendor in [*rules, "mean"]:
        assert abs(rows[vendor]["headroom"]) <= 0.02, vendor
    # the mean's interval covers 0 (a single vendor's may miss it, 1 in 20 under no effect)
    assert rows["mean"]["low"] <= 0 <= rows["mean"]["high"]
    assert image_headroom(*train, *test) == rows  # deterministic


def test_a_vendor_with_one_training_label_is_named() -> None:
    rng = np.random.default_rng(2)
    train_x, train_y, train_v = _vendor_data(rng, {"A": 1, "B": 1}, 40)
    train_y[train_v == "B"] = 1
    with pytest.raises(KitError, match="vendor B: its training subjects hold only one label"):
        image_headroom(train_x, train_y, train_v, *_vendor_data(rng, {"A": 1, "B": 1}, 20))


def test_seeds_aggregate_to_mean_sd_and_range() -> None:
    def report(seed: int, a: float, b: float) -> dict:
        rows = {"A": {"headroom": a}, "B": {"headroom": b}, "mean": {"headroom": (a + b) / 2}}
        return {"seed": seed, "image_level": {"features": {"pixels": rows}}}

    summary = aggregate_seeds([report(0, 0.1, 0.0), report(1, 0.3, 0.0), report(2, 0.2, 0.0)])
    assert summary["seeds"] == [0, 1, 2]
    a = summary["features"]["pixels"]["A"]
    assert a == {"mean": 0.2, "sd": 0.1, "min": 0.1, "max": 0.3, "n_seeds": 3}
    assert summary["features"]["pixels"]["mean"]["mean"] == 0.1
    with pytest.raises(KitError, match="no image_level"):
        aggregate_seeds([{"seed": 4}])


def test_subjects_are_drawn_per_vendor_as_the_rules_say() -> None:
    shifts = parse_shifts("acq=1,mix=1,label=1")
    assert cell_name(shifts) == "-".join(f"{k}{v:g}" for k, v in shifts.as_dict().items())
    assert cell_name(shifts).startswith("acq1-mix1-label1")
    centres = draw_centres(shifts, 0)
    train = draw_train_subjects(centres, 30, 0)
    test = draw_test_subjects(centres, 10, 0)
    assert Counter(d.centre.vendor for d in train) == dict.fromkeys(
        ("Siemens", "Philips", "GE", "Canon"), 30)
    assert not any(d.centre.unseen for d in train + test)
    by_vendor = Counter((d.centre.vendor, d.label) for d in test)
    assert set(by_vendor.values()) == {5}  # balanced within every vendor
    assert draw_train_subjects(centres, 30, 0) == train  # the cohort seed fixes the subjects


def test_headroom_images_end_to_end(tiny_weights: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    argv = ["headroom", "--images", "--shift", "acq=1,mix=1,label=1", "--n-train", "60",
            "--n-test", "20", "--train-per-vendor", "5", "--test-per-vendor", "2",
            "--weights", str(tiny_weights), "--workers", "1", "--no-progress",
            "--out", str(tmp_path)]
    assert data_prep_main(argv) == 0
    printed = capsys.readouterr().out
    assert "oracle headroom" in printed and "image-level headroom" in printed
    folder = tmp_path / "image_headroom" / cell_name(parse_shifts("acq=1,mix=1,label=1")) / "seed0"
    report = json.loads((folder / "headroom.json").read_text())
    assert report["per_vendor"] and "mean_headroom" in report  # the oracle keys, untouched
    image = report["image_level"]
    assert set(image["features"]) == {"pixels", "fm"}
    assert (image["n_train_per_vendor"], image["n_test_per_vendor"]) == (5, 2)
    assert image["command"].startswith("python -m data_prep headroom --images")
    for rows in image["features"].values():
        assert set(rows) == {"Siemens", "Philips", "GE", "Canon", "mean"}
        assert all(rows[v]["n_test"] == 2 for v in ("Siemens", "Philips", "GE", "Canon"))
    # cohorts and features are reused: same report, no rendering
    assert data_prep_main(argv) == 0
    assert json.loads((folder / "headroom.json").read_text()) == report
    # a different size in the same folder is refused, not mixed in
    assert data_prep_main([*argv[:-2], "--train-per-vendor", "6", "--out", str(tmp_path)]) == 2
    assert "holds another image-headroom cohort" in capsys.readouterr().err


def test_headroom_images_needs_out(capsys: pytest.CaptureFixture) -> None:
    assert data_prep_main(["headroom", "--images", "--n-train", "50", "--n-test", "20"]) == 2
    assert "--images needs --out" in capsys.readouterr().err
