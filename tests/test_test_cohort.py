"""`--test-data` (a separate balanced test cohort) and `--cross-site` on the tests' cohort.

The test cohort is built from the harmonized fixture: every subject relabelled `test`, two of
them marked as the unseen centre, so the test can check exactly where each subject went.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.federated.loop import run_training
from duallora.federated.prepare import UNSEEN_SITE, load_vendor_clients


def _config(data: Path, cache: Path, **changes) -> TrainConfig:
    values = {"data": str(data), "fm": "none", "model_size": "test-tiny", "rounds": 2,
              "local_epochs": 1, "bootstrap": 0, "max_train_per_client": 8,
              "cache_dir": str(cache), "strategy": "med_duallora"}
    values.update(changes)
    return TrainConfig.from_dict(values)


@pytest.fixture(scope="module")
def test_cohort(harmonized_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's subjects as a test cohort (volume paths point back into the fixture)."""
    out = tmp_path_factory.mktemp("test_cohort")
    meta = pd.read_csv(harmonized_dir / "metadata.csv")
    for column in ("ed_path", "es_path", "ed_seg_path", "es_seg_path"):
        if column in meta:
            meta[column] = [str((harmonized_dir / p).resolve()) if isinstance(p, str) else p
                            for p in meta[column]]
    meta["split"] = "test"
    meta["unseen_centre"] = 0
    meta.loc[meta.index[:2], "unseen_centre"] = 1
    meta.to_csv(out / "metadata.csv", index=False)
    return out


def test_test_data_replaces_the_test_split_and_moves_the_old_one_to_validation(
        harmonized_dir: Path, test_cohort: Path, tmp_path: Path):
    own = pd.read_csv(harmonized_dir / "metadata.csv")
    tests = pd.read_csv(test_cohort / "metadata.csv")
    clients = load_vendor_clients(_config(harmonized_dir, tmp_path, test_data=str(test_cohort)))
    unseen = tests[tests["unseen_centre"] == 1]
    assert clients[UNSEEN_SITE].splits["test"].subject_ids == unseen["subject_id"].tolist()
    for vendor, client in clients.items():
        if vendor == UNSEEN_SITE:
            continue
        seen = tests[(tests["vendor"] == vendor) & (tests["unseen_centre"] == 0)]
        assert client.splits["test"].subject_ids == seen["subject_id"].tolist()
        was = own[own["vendor"] == vendor]
        assert sorted(client.splits["val"].subject_ids) == sorted(
            was[was["split"].isin(["val", "test"])]["subject_id"].tolist())


def test_unseen_centre_is_tested_and_cross_site_fills_the_matrix(
        harmonized_dir: Path, test_cohort: Path, tmp_path: Path):
    config = _config(harmonized_dir, tmp_path / "cache", test_data=str(test_cohort),
                     cross_site=True)
    run = run_training(config, tmp_path / "run", progress=False)
    preds = pd.read_csv(run / "predictions.csv")
    holdout = preds[preds["split"] == "holdout"]
    assert set(holdout["client"]) == {UNSEEN_SITE} and len(holdout) == 2
    vendors = sorted(set(preds.loc[preds["split"] == "test", "client"]))
    cross = preds[preds["split"].str.startswith("cross_site:")]
    for owner in vendors:
        tested = set(cross.loc[cross["split"] == f"cross_site:{owner}", "client"])
        assert tested == (set(vendors) - {owner}) | {UNSEEN_SITE}
    # a site's model on its own data is its `test` row; on another site, the same subjects as
    # that site's own test split
    a, b = vendors[0], vendors[1]
    own_b = preds[(preds["split"] == "test") & (preds["client"] == b)]
    a_on_b = cross[(cross["split"] == f"cross_site:{a}") & (cross["client"] == b)]
    assert a_on_b["subject_id"].tolist() == own_b["subject_id"].tolist()
    assert not a_on_b["prob"].equals(own_b["prob"])  # another site's private adapter
    metrics = pd.read_csv(run / "metrics.csv")
    assert not metrics["split"].astype(str).str.startswith("cross_site").any()


def test_single_site_cross_site_uses_the_owners_head_standardization(
        harmonized_dir: Path, test_cohort: Path, tmp_path: Path):
    config = _config(harmonized_dir, tmp_path / "cache", test_data=str(test_cohort),
                     cross_site=True, strategy="single_site")
    run = run_training(config, tmp_path / "run", progress=False)
    preds = pd.read_csv(run / "predictions.csv")
    assert preds["split"].str.startswith("cross_site:").any()
    assert "holdout" not in set(preds["split"])  # no global model: the unseen centre is cross


def test_feddpa_cross_site_weights_instances_by_the_owners_training_data(
        harmonized_dir: Path, test_cohort: Path, tmp_path: Path):
    """FedDPA mixes its adapters per instance by similarity to the model's own training
    instances; the unseen site has none, so they must travel with the model."""
    config = _config(harmonized_dir, tmp_path / "cache", test_data=str(test_cohort),
                     cross_site=True, strategy="feddpa")
    run = run_training(config, tmp_path / "run", progress=False)
    preds = pd.read_csv(run / "predictions.csv")
    cross = preds[preds["split"].str.startswith("cross_site:")]
    assert UNSEEN_SITE in set(cross["client"])
    assert cross["prob"].between(0, 1).all()


def test_test_data_refuses_a_folder_without_metadata_and_an_unknown_holdout_vendor(
        harmonized_dir: Path, test_cohort: Path, tmp_path: Path):
    with pytest.raises(KitError, match="--test-data .*no metadata.csv"):
        load_vendor_clients(_config(harmonized_dir, tmp_path, test_data=str(tmp_path)))
    with pytest.raises(KitError, match="--holdout-vendor Toshiba"):
        load_vendor_clients(_config(harmonized_dir, tmp_path, test_data=str(test_cohort),
                                    holdout_vendor="Toshiba"))


def test_holdout_vendor_with_a_test_cohort_never_trains_and_the_global_model_scores_it(
        harmonized_dir: Path, test_cohort: Path, tmp_path: Path):
    """Leave one vendor out on a test cohort: the vendor's training-cohort subjects are gone,
    its test-cohort subjects are scored by the global model only (``test_global``), beside the
    unseen centre; the other vendors train and are tested as usual."""
    held = "Canon"
    clients = load_vendor_clients(_config(harmonized_dir, tmp_path, test_data=str(test_cohort),
                                          holdout_vendor=held))
    assert len(clients[held].splits["train"]) == len(clients[held].splits["val"]) == 0
    tests = pd.read_csv(test_cohort / "metadata.csv")
    wanted = tests[(tests["vendor"] == held) & (tests["unseen_centre"] == 0)]
    assert clients[held].splits["test"].subject_ids == wanted["subject_id"].tolist()
    config = _config(harmonized_dir, tmp_path / "cache", test_data=str(test_cohort),
                     holdout_vendor=held, cross_site=True)
    run = run_training(config, tmp_path / "run", progress=False)
    preds = pd.read_csv(run / "predictions.csv")
    metrics = pd.read_csv(run / "metrics.csv")
    assert held not in set(metrics.loc[metrics["split"].isin(["train", "val"]), "client"])
    assert held not in set(preds.loc[preds["split"] == "test", "client"])
    scored = preds[(preds["split"] == "test_global") & (preds["client"] == held)]
    assert sorted(scored["subject_id"]) == sorted(wanted["subject_id"])
    assert set(preds.loc[preds["split"] == "holdout", "client"]) == {UNSEEN_SITE}
    trained = set(preds.loc[preds["split"] == "test", "client"])
    assert trained and held not in trained


def test_cross_site_is_refused_over_flower(harmonized_dir: Path, tmp_path: Path):
    from duallora.flower.localhost.run import run_on_localhost

    with pytest.raises(KitError, match="in-process only"):
        run_on_localhost(_config(harmonized_dir, tmp_path, cross_site=True), tmp_path / "o", 4)


def test_validation_predictions_are_the_selected_models_on_each_vendors_validation_split(
        harmonized_dir: Path, test_cohort: Path, tmp_path: Path):
    """``validation_predictions.csv`` (the benchmark's thresholds are fixed on it): every
    vendor's validation subjects, scored by the model the run selected on them, so each
    vendor's balanced accuracy there is the best validation score the run logged."""
    from duallora.benchmark.validation import ensure_validation_predictions
    from duallora.results.metrics import binary_metrics

    config = _config(harmonized_dir, tmp_path / "cache", test_data=str(test_cohort),
                     selection="site-val-ba", rounds=3)
    run = run_training(config, tmp_path / "run", progress=False)
    path = ensure_validation_predictions(run)
    stamp = path.stat().st_mtime_ns
    assert ensure_validation_predictions(run).stat().st_mtime_ns == stamp  # written once
    rows = pd.read_csv(path)
    assert set(rows["split"]) == {"val", "val_global"}
    clients = load_vendor_clients(config)
    metrics = pd.read_csv(run / "metrics.csv")
    assert UNSEEN_SITE not in set(rows["client"])  # the unseen centre has no validation
    for vendor, client in clients.items():
        if vendor == UNSEEN_SITE:
            continue
        own = rows[(rows["split"] == "val") & (rows["client"] == vendor)]
        assert own["subject_id"].astype(str).tolist() == client.splits["val"].subject_ids
        logged = metrics[(metrics["client"] == vendor) & (metrics["split"] == "val")
                         & (metrics["metric"] == "balanced_accuracy")]["value"]
        ba = binary_metrics(own["label"].to_numpy(), own["prob"].to_numpy())[
            "balanced_accuracy"]
        assert ba == pytest.approx(logged.max(), abs=1e-6), vendor
