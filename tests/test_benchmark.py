"""The benchmark end to end on its `test` plan (tiny v2 cohorts, test-tiny model, 2 seeds).

Checks the numbers the report prints against the run folders they come from: the primary
difference against the runs' own predictions, the bytes against the wire logs, the cross-site
diagonal against each site's own test split, the control gates, the sensitivity at the
validation threshold, the held-out vendor, and that a second call trains nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from duallora.benchmark import get_plan, lovo, run_benchmark, shared_data_dir
from duallora.benchmark.plans import CONTROL_RUNS, PRIMARY, ShiftCell
from duallora.benchmark.runs import planned_runs
from duallora.benchmark.sizing import plan_size
from duallora.errors import KitError
from duallora.results.metrics import binary_metrics
from duallora.results.thresholds import threshold_at_specificity

pytestmark = pytest.mark.slow
VENDORS = ("Canon", "GE", "Philips", "Siemens")


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("benchmark")
    plan = get_plan("test")
    data = shared_data_dir(root / "data")  # make test: one folder with notebook 04 (a subset)
    result = run_benchmark(plan, data, root / "out", progress=False, command="pytest")
    return {"plan": plan, "result": result, "data": data, "out": root / "out"}


def _runs(data: Path, cell: ShiftCell, name: str) -> list[Path]:
    return sorted((data / cell.key / "seed0" / "runs").glob(f"{name}_seed*"))


def _seen_ba(folder: Path, split: str = "test") -> float:
    frame = pd.read_csv(folder / "predictions.csv")
    part = frame[(frame["split"] == split) & (frame["client"] != "unseen")]
    return binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())[
        "balanced_accuracy"]


def _own_vendor_ba(folders: list[Path], vendor: str) -> float:
    """Mean over the runs of ``vendor``'s balanced accuracy on its own test subjects."""
    values = []
    for folder in folders:
        frame = pd.read_csv(folder / "predictions.csv")
        part = frame[(frame["split"] == "test") & (frame["client"] == vendor)]
        values.append(binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())[
            "balanced_accuracy"])
    return float(np.mean(values))


def test_plan_trains_every_planned_run_once(benchmark: dict):
    plan = benchmark["plan"]
    planned = list(planned_runs(plan))
    folders = list(benchmark["data"].glob("*/seed*/runs/*"))
    assert len(folders) == len(planned)
    assert all((folder / "kit_run.json").is_file() for folder in folders)
    # each control cell trains only the control runs
    for cell in plan.controls().values():
        assert {p.name.rsplit("_seed", 1)[0] for p in
                (benchmark["data"] / cell.key / "seed0" / "runs").iterdir()} == \
            set(CONTROL_RUNS)
    # the leave-one-vendor-out run is named by the vendor it never trained on
    held = lovo.outlier_vendor(0)
    lovo_runs = sorted((benchmark["data"] / plan.primary_cell.key / "seed0" / "runs")
                       .glob("*_lovo-*"))
    assert [p.name for p in lovo_runs] == [f"med_duallora_lovo-{held}_seed{s}"
                                           for s in plan.train_seeds]
    config = json.loads((lovo_runs[0] / "config.json").read_text())
    assert config["holdout_vendor"] == held


def test_primary_difference_is_the_mean_of_the_runs_own_differences(benchmark: dict):
    plan, result = benchmark["plan"], benchmark["result"]
    diffs = [_seen_ba(a) - _seen_ba(b) for a, b in zip(
        _runs(benchmark["data"], plan.primary_cell, PRIMARY[0]),
        _runs(benchmark["data"], plan.primary_cell, PRIMARY[1]), strict=True)]
    primary = result["h1"]["primary"]["balanced_accuracy"]
    assert len(diffs) == len(plan.train_seeds) == result["h1"]["n_replicates"]
    assert primary["diff"] == pytest.approx(float(np.mean(diffs)), abs=1e-9)
    assert primary["low"] <= primary["diff"] <= primary["high"]
    assert primary["wilcoxon_p"] is None  # 2 seeds: refused, with its reason
    assert primary["mde"] > 0


def test_every_arm_has_per_vendor_worst_vendor_and_calibration(benchmark: dict):
    plan, result = benchmark["plan"], benchmark["result"]
    cell = result["cells"][plan.primary_cell.key]
    folders = _runs(benchmark["data"], plan.primary_cell, "med_duallora")
    for vendor in VENDORS:
        entry = cell["vendors"]["med_duallora"]["per_vendor"][vendor]["balanced_accuracy"]
        assert entry["value"] == pytest.approx(_own_vendor_ba(folders, vendor))
        assert entry["low"] <= entry["value"] <= entry["high"]
    for arm, table in cell["vendors"].items():
        values = {v: m["balanced_accuracy"]["value"] for v, m in table["per_vendor"].items()}
        assert table["worst_vendor"]["value"] == min(values.values()), arm
        assert values[table["worst_vendor"]["vendor"]] == min(values.values()), arm
    for arm, metrics in cell["arms"].items():
        assert 0 <= metrics["brier"]["value"] <= 1 and 0 <= metrics["ece"]["value"] <= 1, arm
    text = (benchmark["out"] / "benchmark.md").read_text()
    assert "worst vendor" in text and "Brier" in text and "ECE" in text


def test_dose_response_covers_every_label_strength(benchmark: dict):
    dose = benchmark["result"]["h1"]["dose_response"]
    assert sorted(row["label_strength"] for row in dose) == \
        sorted(benchmark["plan"].label_strengths)


def test_control_gates_are_the_runs_own_differences_and_gate_the_verdict(benchmark: dict):
    plan, result = benchmark["plan"], benchmark["result"]
    gates = {"negative": ("med_duallora", "fedavg_lora"),
             "positive": ("fedavg_lora_ft", "fedavg_lora")}
    for kind, cell in plan.controls().items():
        entry = result["controls"][kind]
        a, b = gates[kind]
        diffs = [_seen_ba(x) - _seen_ba(y) for x, y in zip(
            _runs(benchmark["data"], cell, a), _runs(benchmark["data"], cell, b), strict=True)]
        assert entry["estimate"] == pytest.approx(float(np.mean(diffs)), abs=1e-9)
        low, high = entry["interval"]
        assert low <= entry["estimate"] <= high
        assert entry["cell"] == cell.spec and entry["method"]
        assert entry["passed"] is (low <= 0 if kind == "negative" else low > 0)
    verdict = result["h1"]["verdict"]
    passed = all(result["controls"][k]["passed"] for k in ("negative", "positive"))
    assert (verdict["status"] == "withheld") is (not passed)
    headline = (benchmark["out"] / "headline.md").read_text()
    assert verdict["text"] in headline
    if not result["controls"]["positive"]["passed"]:
        assert "could not see personalization" in headline
    if not result["controls"]["negative"]["passed"]:
        assert "gains where none exist" in headline


def test_sensitivity_at_the_validation_threshold_is_read_on_test(benchmark: dict):
    plan, result = benchmark["plan"], benchmark["result"]
    arm = result["cells"][plan.primary_cell.key]["arms"]["med_duallora"]
    values, cuts = [], []
    for folder in _runs(benchmark["data"], plan.primary_cell, "med_duallora"):
        val = pd.read_csv(folder / "validation_predictions.csv")
        val = val[val["split"] == "val"]
        cut = threshold_at_specificity(val["label"].to_numpy(), val["prob"].to_numpy())
        test = pd.read_csv(folder / "predictions.csv")
        test = test[(test["split"] == "test") & (test["client"] != "unseen")]
        diseased = test[test["label"] == 1]
        values.append(float(np.mean(diseased["prob"].to_numpy() >= cut)))
        cuts.append(cut)
    assert arm["sensitivity_at_val_spec90"]["value"] == pytest.approx(np.mean(values))
    assert sorted(arm["val_threshold_spec90"].values()) == pytest.approx(sorted(cuts))
    entry = arm["specificity_at_val_spec90"]
    assert entry["low"] <= entry["value"] <= entry["high"]
    assert "90% specificity" in (benchmark["out"] / "benchmark.md").read_text()


def test_held_out_vendor_is_scored_by_the_global_model_it_never_trained_with(benchmark: dict):
    plan, result = benchmark["plan"], benchmark["result"]
    held = lovo.outlier_vendor(0)
    entry = result["lovo"]["outlier"]["med_duallora"]
    assert entry["held_out_vendor"] == {"0": held}
    values = []
    for folder in sorted((benchmark["data"] / plan.primary_cell.key / "seed0" / "runs")
                         .glob("*_lovo-*")):
        frame = pd.read_csv(folder / "predictions.csv")
        assert held not in set(frame.loc[frame["split"] == "test", "client"])
        part = frame[(frame["split"] == "test_global") & (frame["client"] == held)]
        values.append(binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())[
            "balanced_accuracy"])
    assert entry["held_out"]["balanced_accuracy"]["value"] == pytest.approx(np.mean(values))
    assert "trained_with_vendor" in entry and "difference" in entry


def test_bytes_come_from_the_wire_logs(benchmark: dict):
    plan, rows = benchmark["plan"], benchmark["result"]["h3"]["rows"]
    by_arm = {row["arm"]: row for row in rows}
    folder = _runs(benchmark["data"], plan.primary_cell, "med_duallora")[0]
    comm = [json.loads(line) for line in (folder / "comm.jsonl").read_text().splitlines()]
    assert by_arm["med_duallora"]["mb_total"] == pytest.approx(
        sum(entry["bytes"] for entry in comm) / 1e6)
    assert by_arm["single_site"]["mb_total"] == 0.0
    assert by_arm["med_duallora_global"]["mb_total"] == by_arm["med_duallora"]["mb_total"]


def test_cross_site_diagonal_is_each_sites_own_test(benchmark: dict):
    plan, matrix = benchmark["plan"], benchmark["result"]["cross_site"]["med_duallora"]
    folders = _runs(benchmark["data"], plan.primary_cell, "med_duallora")
    for vendor in VENDORS:
        assert matrix[vendor][vendor] == pytest.approx(_own_vendor_ba(folders, vendor))
        others = set(matrix[vendor]) - {vendor}
        assert {"unseen"} <= others and len(others) == 4  # 3 other vendors + unseen centre
    assert "unseen" in matrix["global"]
    subjects = benchmark["result"]["cross_site_subjects"]
    per_site = benchmark["plan"].test_per_vendor
    assert subjects == {**dict.fromkeys(VENDORS, per_site),
                        "unseen": per_site}
    assert "not resolvable at this size" in (benchmark["out"] / "benchmark.md").read_text()


def test_report_files_carry_provenance_and_the_mde_banner(benchmark: dict):
    out, result = benchmark["out"], benchmark["result"]
    stored = json.loads((out / "benchmark.json").read_text())
    assert stored["provenance"]["command"] == "pytest"
    assert set(stored["provenance"]) >= {"commit", "dirty"}
    assert isinstance(stored["controls"]["negative"]["passed"], bool)
    assert isinstance(stored["controls"]["positive"]["passed"], bool)
    assert stored["plan"]["train_seeds"] == [0, 1]
    assert set(stored["headroom"]) == {f"{cell.key}/seed0" for cell in
                                       benchmark["plan"].cells()}
    text = (out / "benchmark.md").read_text()
    assert "not resolvable at this size" in text or "p=" in text
    assert f"{result['h1']['primary']['balanced_accuracy']['mde']:.3f}" in text
    for figure in ("dose_response.png", "pareto.png", "cross_site.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    # references are rows of the arm table
    arms = result["cells"][benchmark["plan"].primary_cell.key]["arms"]
    assert arms["chance"]["balanced_accuracy"]["value"] == pytest.approx(0.5)
    assert {"head_only_probe", "raw_pixel_probe"} <= set(arms)


def test_a_second_call_reuses_every_run(benchmark: dict):
    before = {p: p.stat().st_mtime_ns for p in benchmark["data"].glob("*/seed*/runs/*/"
                                                                     "metrics.csv")}
    size = plan_size(benchmark["plan"], benchmark["data"])
    assert size["finished"] == {"cohorts": size["n_cohorts"], "runs": size["n_runs"]}
    assert size["estimate"]["run_core_seconds"] == 0  # nothing left to train
    run_benchmark(benchmark["plan"], benchmark["data"], benchmark["out"], progress=False)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after


def test_unknown_plan_is_one_clear_error():
    with pytest.raises(KitError, match="unknown benchmark plan"):
        get_plan("huge")


def test_cohort_cache_builds_each_settings_once_and_copies_it(tmp_path: Path, monkeypatch):
    """``DUALLORA_COHORT_CACHE``: two data folders asking for one cohort get one build and
    identical copies; other settings build their own; without the variable nothing is cached."""
    import data_prep.harmonize
    import data_prep.phantoms
    from duallora.benchmark.cohorts import COHORT_CACHE_ENV, ensure_cohort

    builds: list[Path] = []

    def fake_phantoms(out: Path, **settings) -> None:  # a stand-in raw cohort, cheap to write
        builds.append(Path(out))
        (Path(out) / "TestHarmonized").mkdir(parents=True)
        (Path(out) / "cohort.json").write_text(json.dumps(settings["shifts"], default=str))

    def fake_harmonize(out: Path, seed: int, **roots) -> None:
        Path(out).mkdir(parents=True)
        (Path(out) / "metadata.csv").write_text(f"subject_id\nseed{seed}\n")

    monkeypatch.setattr(data_prep.phantoms, "write_phantom_cohort", fake_phantoms)
    monkeypatch.setattr(data_prep.harmonize, "harmonize_datasets", fake_harmonize)
    monkeypatch.setenv(COHORT_CACHE_ENV, str(tmp_path / "cache"))
    plan = get_plan("test")
    first = ensure_cohort(tmp_path / "a", plan, plan.primary_cell, 0, progress=False)
    second = ensure_cohort(tmp_path / "b", plan, plan.primary_cell, 0, progress=False)
    assert len(builds) == 1 and builds[0].is_relative_to(tmp_path / "cache")
    for cohort in (first, second):
        assert (cohort.harmonized / "metadata.csv").read_text() == "subject_id\nseed0\n"
        assert (cohort.raw / "cohort.json").is_file()
    ensure_cohort(tmp_path / "b", plan, plan.primary_cell, 1, progress=False)  # other settings
    assert len(builds) == 2
    monkeypatch.delenv(COHORT_CACHE_ENV)
    ensure_cohort(tmp_path / "c", plan, plan.primary_cell, 0, progress=False)
    assert builds[-1] == tmp_path / "c" / plan.primary_cell.key / "seed0" / "raw"
    assert len(builds) == 3


def test_one_data_folder_serves_benchmarks_one_at_a_time(tmp_path: Path, monkeypatch):
    """``DUALLORA_BENCHMARK_DATA`` points callers at one folder (``shared_data_dir``); while
    one builds its cohorts and runs there, a second waits for the folder's lock (and then
    reuses what the first made)."""
    from filelock import FileLock, Timeout

    from duallora.benchmark import SHARED_DATA_ENV, runs

    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    assert shared_data_dir(tmp_path / "own") == tmp_path / "own"
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path / "shared"))
    data = shared_data_dir(tmp_path / "own")
    assert data == tmp_path / "shared"
    held = []

    def build(plan, folder, progress):  # stands in for the cohorts and the training
        with pytest.raises(Timeout):
            FileLock(str(folder / ".benchmark.lock")).acquire(timeout=0)
        held.append(folder)
        return []

    monkeypatch.setattr(runs, "_ensure_plan_runs", build)
    assert runs.ensure_plan_runs(get_plan("test"), data, progress=False) == []
    assert held == [data]
    FileLock(str(data / ".benchmark.lock")).acquire(timeout=0)  # released afterwards
