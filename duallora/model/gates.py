"""The FM gate: is the frozen foundation model worth adapting? (rules fixed before measuring)

On a balanced harmonized cohort of at least 1000 subjects, three feature sets of the ED+ES model
input (``duallora.model.cohort_features``): ``fm`` (per-frame readout of the given weights),
``pixels`` (the benchmark's raw-pixel features) and ``random`` (per-frame readout of a random
one-frame ConvViT of the same preset, init seeds 0, 1, 2). Each is scored by the kit's logistic
probe with out-of-fold probabilities (5-fold StratifiedKFold, shuffled, fold seed 0), balanced
accuracy at 0.5. The gate compares

- ``BA(fm) - BA(pixels)`` and
- ``BA(fm) - mean_seeds BA(random)``,

each with a 95% paired bootstrap interval (2000 resamples of subjects stratified by label,
seed 0; the random arm's mean is recomputed in every replicate). A cohort passes when both
differences are >= 0.05 and both lower bounds are > 0; the report passes when every cohort
does. An FM that does not beat pixels and its own architecture by that much gives adapters
nothing that a model trained from scratch would not have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from duallora.errors import KitError
from duallora.results.ba_bootstrap import N_BOOT, balanced_accuracy, paired_ba_difference

MIN_DIFFERENCE = 0.05
RANDOM_SEEDS = (0, 1, 2)
FOLD_SEED = 0
FOLDS = 5
BOOT_SEED = 0
MIN_SUBJECTS = 1000
MAX_IMBALANCE = 0.05  # "balanced": disease share within 0.5 +- this


def arm_names(seeds: tuple[int, ...] = RANDOM_SEEDS) -> list[str]:
    """The probed arms: ``fm``, ``pixels`` and one ``random<seed>`` per init seed."""
    return ["fm", "pixels", *(f"random{s}" for s in seeds)]


def comparison_passes(diff: dict[str, float]) -> bool:
    """The pre-registered criterion for one difference: >= 0.05 with its lower bound > 0."""
    return bool(diff["diff"] >= MIN_DIFFERENCE and diff["low"] > 0)


def gate_row(labels: np.ndarray, probs: dict[str, np.ndarray], n_boot: int = N_BOOT,
             seed: int = BOOT_SEED) -> dict[str, Any]:
    """Scores and the two gated differences from out-of-fold probabilities of every arm.

    ``probs`` holds ``fm``, ``pixels`` and one or more ``random<seed>`` arms.
    """
    labels = np.asarray(labels)
    randoms = sorted(k for k in probs if k.startswith("random"))
    if "fm" not in probs or "pixels" not in probs or not randoms:
        raise KitError("gate_row needs the fm, pixels and random<seed> arms")
    scores = {arm: {"ba": round(balanced_accuracy(labels, p), 4),
                    "auc": round(float(roc_auc_score(labels, p)), 4)}
              for arm, p in probs.items()}
    scores["random_mean"] = {
        key: round(float(np.mean([scores[r][key] for r in randoms])), 4) for key in ("ba", "auc")}
    versus_pixels = paired_ba_difference(labels, probs["fm"], [probs["pixels"]], n_boot, seed)
    versus_random = paired_ba_difference(labels, probs["fm"], [probs[r] for r in randoms],
                                         n_boot, seed)
    differences = {name: {k: round(v, 4) for k, v in d.items()} | {"passed": comparison_passes(d)}
                   for name, d in (("fm_minus_pixels", versus_pixels),
                                   ("fm_minus_random", versus_random))}
    return {"scores": scores, "differences": differences,
            "criteria_passed": all(d["passed"] for d in differences.values())}


def cohort_precondition(labels: np.ndarray) -> dict[str, Any]:
    """Is the cohort the gate is defined on: at least 1000 subjects, balanced labels?"""
    share = float(np.mean(labels))
    return {"n_subjects": int(len(labels)), "disease_share": round(share, 4),
            "min_subjects": MIN_SUBJECTS, "met": bool(len(labels) >= MIN_SUBJECTS
                                                      and abs(share - 0.5) <= MAX_IMBALANCE)}


def cohort_gate(cohort: str | Path, weights: str | Path, size: str = "tutorial",
                cache_dir: str | Path | None = None, progress: bool = True,
                n_boot: int = N_BOOT) -> dict[str, Any]:
    """The gate row of one cohort: features (cached), out-of-fold probes, differences."""
    from duallora.model.cohort_features import CohortInput
    from duallora.model.probe import oof_probabilities

    data = CohortInput(cohort, size, progress=progress)
    if len(np.unique(data.labels)) != 2 or np.bincount(data.labels).min() < FOLDS:
        raise KitError(f"--cohort {cohort}: needs at least {FOLDS} subjects of each label")
    arms = {"fm": data.features("fm", weights=weights, cache_dir=cache_dir),
            "pixels": data.features("pixels", cache_dir=cache_dir)}
    for s in RANDOM_SEEDS:
        arms[f"random{s}"] = data.features("random", seed=s, cache_dir=cache_dir)
    probs = {arm: oof_probabilities(f, data.labels, seed=FOLD_SEED, folds=FOLDS)
             for arm, f in arms.items()}
    row = gate_row(data.labels, probs, n_boot=n_boot)
    precondition = cohort_precondition(data.labels)
    return {"cohort": str(cohort), "precondition": precondition, **row,
            "passed": bool(row["criteria_passed"] and precondition["met"])}


def gate_report(cohort_dirs: list[str | Path], weights_path: str | Path,
                size: str = "tutorial", cache_dir: str | Path | None = None,
                progress: bool = True, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Per-cohort gate rows and the overall verdict (every cohort passes)."""
    from duallora.model.cohort_features import file_sha256

    if not cohort_dirs:
        raise KitError("--cohort: give at least one harmonized cohort")
    weights = Path(weights_path)
    if not weights.is_file():
        raise KitError(f"--weights {weights}: no such file")
    rows = [cohort_gate(c, weights, size, cache_dir, progress, n_boot) for c in cohort_dirs]
    return {
        "weights": str(weights), "weights_sha256": file_sha256(weights), "size": size,
        "rules": {"readout": "per_frame", "probe": "standardized logistic, C=0.1, balanced",
                  "folds": FOLDS, "fold_seed": FOLD_SEED, "threshold": 0.5,
                  "random_seeds": list(RANDOM_SEEDS), "n_boot": n_boot,
                  "bootstrap_seed": BOOT_SEED, "min_difference": MIN_DIFFERENCE,
                  "min_subjects": MIN_SUBJECTS, "max_imbalance": MAX_IMBALANCE},
        "cohorts": rows,
        "passed": all(r["passed"] for r in rows),
    }


def format_gate_report(report: dict[str, Any]) -> str:
    """The report as a small printable table (one line per cohort and arm)."""
    lines = [f"FM gate: {report['weights']} (sha256 {report['weights_sha256'][:12]}, "
             f"size {report['size']})",
             f"{'cohort':<28} {'arm':<12} {'BA':>6} {'AUC':>6}"]
    for row in report["cohorts"]:
        path = Path(row["cohort"])  # "seed101/test_harmonized": the folder alone is ambiguous
        name = (f"{path.parent.name}/{path.name}" if path.parent.name else path.name)[-28:]
        for arm in ("fm", "pixels", "random_mean"):
            s = row["scores"][arm]
            lines.append(f"{name:<28} {arm:<12} {s['ba']:>6.3f} {s['auc']:>6.3f}")
        for label, d in row["differences"].items():
            lines.append(f"{name:<28} {label:<16} {d['diff']:+.3f} [{d['low']:+.3f}, "
                         f"{d['high']:+.3f}] {'pass' if d['passed'] else 'FAIL'}")
        pre = row["precondition"]
        if not pre["met"]:
            lines.append(f"{name:<28} cohort is not the gate's ({pre['n_subjects']} subjects, "
                         f"disease share {pre['disease_share']:.2f}; needs >= "
                         f"{pre['min_subjects']}, balanced)")
    lines.append(f"gate {'PASSED' if report['passed'] else 'NOT passed'}")
    return "\n".join(lines)
