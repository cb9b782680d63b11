"""Image-level personalization headroom: per-vendor probe against a pooled probe, same features.

The oracle headroom (``data_prep.phantoms.headroom``) sees true heart measurements; this is what
a model that sees *images* could gain by personalizing. On one feature set (raw pixels or frozen
FM features): a **pooled probe** (the kit's logistic probe) fitted on every vendor's training
subjects, and a **per-vendor probe**, the same probe fitted on one vendor's training subjects
only. The headroom of vendor v is ``BA(per-vendor probe on v's test) - BA(pooled probe on v's
test)``, with a 95% paired bootstrap interval over v's test subjects (2000 resamples stratified
by label, seed 0); the mean over vendors resamples every vendor's test subjects jointly.

Pure arrays in, dict out: no rendering, no model, so the rules are tested on synthetic data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from duallora.errors import KitError
from duallora.results.ba_bootstrap import N_BOOT, hits, interval, stratum_rates

BOOT_SEED = 0


def _check_vendor_labels(vendor: str, labels: np.ndarray, what: str) -> None:
    if len(np.unique(labels)) != 2:
        raise KitError(f"vendor {vendor}: its {what} subjects hold only one label; draw more "
                       f"(--train-per-vendor / --test-per-vendor)")


def _ba_from_rates(keys: list, rates: np.ndarray, vendor: str) -> np.ndarray:
    """Mean over vendor ``vendor``'s label strata of per-stratum hit rates (strata x draws)."""
    rows = [j for j, key in enumerate(keys) if key.split("|")[0] == vendor]
    return rates[rows].mean(axis=0)


def image_headroom(train_x: np.ndarray, train_y: np.ndarray, train_vendor: np.ndarray,
                   test_x: np.ndarray, test_y: np.ndarray, test_vendor: np.ndarray,
                   n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict[str, Any]:
    """Per-vendor and mean headroom of per-vendor over pooled probes on one feature set."""
    from duallora.model.probe import fit_predict

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    train_vendor, test_vendor = np.asarray(train_vendor, str), np.asarray(test_vendor, str)
    vendors = list(dict.fromkeys(test_vendor.tolist()))
    pooled_probs = fit_predict(train_x, train_y, test_x)
    local_probs = np.empty(len(test_y))
    rows: dict[str, Any] = {}
    headrooms = []
    for vendor in vendors:
        train, test = train_vendor == vendor, test_vendor == vendor
        if not train.any():
            raise KitError(f"vendor {vendor}: has test subjects but no training subjects")
        _check_vendor_labels(vendor, train_y[train], "training")
        _check_vendor_labels(vendor, test_y[test], "test")
        local_probs[test] = fit_predict(train_x[train], train_y[train], test_x[test])
        correct = [hits(test_y[test], local_probs[test]), hits(test_y[test], pooled_probs[test])]
        _, observed, boot = stratum_rates(correct, test_y[test], n_boot, seed)
        ba_local, ba_pooled = observed.mean(axis=1)
        low, high = interval(boot[0].mean(axis=0) - boot[1].mean(axis=0))
        headrooms.append(float(ba_local - ba_pooled))
        rows[vendor] = {"ba_per_vendor_probe": round(float(ba_local), 4),
                        "ba_pooled_probe": round(float(ba_pooled), 4),
                        "headroom": round(float(ba_local - ba_pooled), 4),
                        "low": round(low, 4), "high": round(high, 4),
                        "n_train": int(train.sum()), "n_test": int(test.sum()),
                        "train_disease_share": round(float(train_y[train].mean()), 3)}
    # the mean: one joint resample of every vendor's test subjects (strata vendor x label)
    strata = np.array([f"{v}|{y}" for v, y in zip(test_vendor, test_y, strict=True)])
    keys, _, boot = stratum_rates([hits(test_y, local_probs), hits(test_y, pooled_probs)],
                                  strata, n_boot, seed)
    per_vendor = np.stack([_ba_from_rates(keys, boot[0], v) - _ba_from_rates(keys, boot[1], v)
                           for v in vendors])
    low, high = interval(per_vendor.mean(axis=0))
    rows["mean"] = {"headroom": round(float(np.mean(headrooms)), 4),
                    "low": round(low, 4), "high": round(high, 4), "vendors": vendors}
    return rows


def cohort_headroom(train_dir: str | Path, test_dir: str | Path, feature_sets: list[str],
                    weights: str | Path | None = None, cache_dir: str | Path | None = None,
                    progress: bool = True, n_boot: int = N_BOOT) -> dict[str, Any]:
    """:func:`image_headroom` of harmonized train/test cohorts for each feature set
    (``pixels``; ``fm``: per-frame features of ``weights``, the committed phantom FM when None),
    features cached in ``cache_dir``. The preset is the one the weights record (tutorial for the
    committed FM); pixels use its image size too."""
    from duallora.model.cohort_features import CohortInput, weights_size

    size = weights_size(weights)
    train = CohortInput(train_dir, size, progress=progress)
    test = CohortInput(test_dir, size, progress=progress)
    out = {}
    for name in feature_sets:
        if name not in ("pixels", "fm"):
            raise KitError(f"--features: unknown feature set {name!r}; choose pixels, fm")
        out[name] = image_headroom(
            train.features(name, weights=weights, cache_dir=cache_dir), train.labels,
            train.vendors, test.features(name, weights=weights, cache_dir=cache_dir),
            test.labels, test.vendors, n_boot=n_boot)
    return out
