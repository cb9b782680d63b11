"""Reference rows that need no federated training: chance, two linear probes, the oracle.

- ``chance``: P(disease) = 0.5 for everyone (balanced accuracy and AUC 0.5).
- ``head_only_probe``: a logistic regression on the frozen foundation model's pooled
  features (what the heads read), fitted on every subject of the training cohort pooled: the
  best a head alone can do with centralized data.
- ``raw_pixel_probe``: the same regression on the images average-pooled to 16 x 16 x 4 per
  frame: what the pixels alone give, without any foundation model.
- the oracle's balanced accuracy from the cohort's ``headroom.json`` (decision trees on the
  true heart measurements): a ceiling, not a model of images.

Probe settings are the kit's probe settings (``duallora.model.probe``: standardized features,
L2 C=0.1, balanced classes), fixed before the benchmark existed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from duallora.benchmark.cohorts import BenchmarkCohort
from duallora.benchmark.plans import Plan
from duallora.model.probe import pixel_features


def cohort_reference_probs(plan: Plan, cohort: BenchmarkCohort) -> dict[str, dict[str, float]]:
    """``{arm: {subject_id: P(disease)}}`` for the probe and chance arms on the test cohort."""
    from duallora.data import load_cohort_arrays
    from duallora.model import PRESETS, build_convvit, load_foundation_model, load_phantom_fm
    from duallora.model.probe import embed_all, fit_predict

    preset = PRESETS[plan.model_size]
    size = {"image_size": preset.image_size, "crop_size": preset.crop_size}
    train_x, train_meta = load_cohort_arrays(cohort.harmonized, **size)
    test_x, test_meta = load_cohort_arrays(cohort.test, **size)
    train_y = train_meta["label"].to_numpy(dtype=np.int64)
    if plan.fm == "none":  # the same random init the runs start from (seed 0)
        model = build_convvit(plan.model_size, seed=0)
    elif plan.fm == "phantom":
        model = load_phantom_fm(plan.model_size)
    else:
        model = load_foundation_model(plan.fm, size=plan.model_size)
    ids = test_meta["subject_id"].astype(str).tolist()
    heads = fit_predict(embed_all(model, train_x), train_y, embed_all(model, test_x))
    pixels = fit_predict(pixel_features(train_x), train_y, pixel_features(test_x))
    return {"chance": dict.fromkeys(ids, 0.5),
            "head_only_probe": dict(zip(ids, heads.tolist(), strict=True)),
            "raw_pixel_probe": dict(zip(ids, pixels.tolist(), strict=True))}


def reference_probs(plan: Plan, cohorts: list[BenchmarkCohort], subject_order: Any
                    ) -> dict[str, dict[tuple[int, int], dict[str, Any]]]:
    """Per cell key and (cohort seed, train seed): the reference arms' probabilities in the
    replicate's subject order (``subject_order(cohort) -> list of subject ids``)."""
    out: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
    for cohort in cohorts:
        probs = cohort_reference_probs(plan, cohort)
        order = subject_order(cohort)
        arrays = {arm: np.array([values[sid] for sid in order]) for arm, values in probs.items()}
        for train_seed in plan.train_seeds:
            out.setdefault(cohort.cell.key, {})[cohort.seed, train_seed] = arrays
    return out


def oracle_rows(cohorts: list[BenchmarkCohort]) -> dict[str, Any]:
    """Mean over cohort seeds of the oracles' balanced accuracy and the headroom, per cell."""
    rows: dict[str, Any] = {}
    for cohort in cohorts:
        report = cohort.headroom()
        entry = rows.setdefault(cohort.cell.key, {"pooled_oracle_ba": [], "mean_headroom": [],
                                                  "unseen_pooled_oracle_ba": []})
        entry["pooled_oracle_ba"].append(report["pooled_oracle_ba"])
        entry["mean_headroom"].append(report["mean_headroom"])
        entry["unseen_pooled_oracle_ba"].append(report["unseen_centre"]["ba_pooled_oracle"])
    return {key: {name: float(np.mean(values)) for name, values in entry.items()}
            for key, entry in rows.items()}
