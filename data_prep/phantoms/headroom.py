"""Oracle headroom: how much could a per-vendor model gain over a pooled one, at best?

Computed from the generator's latent parameters and the centres' rules, with no rendering
(seconds). Two oracles see the true measurements of each subject (``labels.MEASURES``) and are
fitted to the labels the centres recorded: a **pooled oracle** on every vendor's training
draws, and a **per-vendor oracle** on that vendor's draws only. Both are scored by balanced
accuracy on fresh balanced test draws of each vendor. The *personalization headroom* of a vendor
is ``BA(per-vendor oracle) - BA(pooled oracle)``: a private adapter can close at most this gap
(it sees images, not measurements). The pooled oracle's BA is the ceiling of any model.

Only a centre-dependent P(label | heart) (annotation shift) creates headroom: acquisition and
case-mix shifts change P(image) and P(heart), not the rule, so at annotation strength 0 the
per-vendor oracle has nothing to learn that the pooled one does not (the tested gate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.tree import DecisionTreeClassifier

from data_prep.conventions import VENDORS
from data_prep.phantoms.centres import centres_by_vendor, draw_centres
from data_prep.phantoms.labels import MEASURES, measurements
from data_prep.phantoms.sampling import Draw, allocate, draw_balanced, draw_natural
from data_prep.phantoms.shifts import Shifts

HEADROOM_FILE = "headroom.json"
GATE = 0.005  # headroom allowed at annotation strength 0 (sampling noise only)


def _xy(draws: list[Draw]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([[measurements(d.latent)[m] for m in MEASURES] for d in draws])
    return x, np.array([d.label for d in draws])


def _oracle(x: np.ndarray, y: np.ndarray) -> DecisionTreeClassifier:
    """A shallow tree: threshold rules on measurements are exactly what trees represent."""
    return DecisionTreeClassifier(max_depth=6, min_samples_leaf=20, class_weight="balanced",
                                  random_state=0).fit(x, y)


def headroom_report(shifts: Shifts, seed: int, n_train: int = 4000,
                    n_test: int = 2000) -> dict[str, Any]:
    """Per vendor and pooled oracle balanced accuracies and the personalization headroom."""
    centres = draw_centres(shifts, seed)
    by_vendor = centres_by_vendor(centres)
    train: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    test: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for vendor in VENDORS:
        group = by_vendor[vendor]
        draws: list[Draw] = []
        for centre, n in zip(group, allocate(n_train, [c.size for c in group]), strict=True):
            draws += draw_natural(centre, n, seed, "headroom-train")
        train[vendor] = _xy(draws)
        test[vendor] = _xy(draw_balanced(group, n_test, seed, "headroom-test"))
    pooled = _oracle(np.concatenate([train[v][0] for v in VENDORS]),
                     np.concatenate([train[v][1] for v in VENDORS]))
    per_vendor = {}
    for vendor in VENDORS:
        local = _oracle(*train[vendor])
        x, y = test[vendor]
        ba_local = float(balanced_accuracy_score(y, local.predict(x)))
        ba_pooled = float(balanced_accuracy_score(y, pooled.predict(x)))
        per_vendor[vendor] = {"ba_per_vendor_oracle": round(ba_local, 4),
                              "ba_pooled_oracle": round(ba_pooled, 4),
                              "headroom": round(ba_local - ba_pooled, 4),
                              "train_disease_share": round(float(train[vendor][1].mean()), 3)}
    unseen = next(c for c in centres if c.unseen)
    x, y = _xy(draw_balanced([unseen], n_test, seed, "headroom-test"))
    headrooms = [per_vendor[v]["headroom"] for v in VENDORS]
    return {
        "seed": seed, "shifts": shifts.as_dict(), "n_train_per_vendor": n_train,
        "n_test_per_vendor": n_test, "features": list(MEASURES),
        "oracle": "DecisionTreeClassifier(max_depth=6, min_samples_leaf=20, balanced)",
        "per_vendor": per_vendor,
        "mean_headroom": round(float(np.mean(headrooms)), 4),
        "max_headroom": round(float(np.max(headrooms)), 4),
        "pooled_oracle_ba": round(float(np.mean([per_vendor[v]["ba_pooled_oracle"]
                                                  for v in VENDORS])), 4),
        "unseen_centre": {"centre": unseen.name, "vendor": unseen.vendor,
                          "ba_pooled_oracle": round(float(balanced_accuracy_score(
                              y, pooled.predict(x))), 4)},
        "gate": {"threshold": GATE, "applies": shifts.label == 0.0,
                 "passed": bool(shifts.label != 0.0 or np.mean(headrooms) <= GATE)},
    }


def write_headroom(report: dict[str, Any], out: Path) -> Path:
    path = Path(out) / HEADROOM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def format_report(report: dict[str, Any]) -> str:
    """The report as a few printable lines."""
    lines = [f"oracle headroom (seed {report['seed']}, shifts "
             + ",".join(f"{k}={v:g}" for k, v in report["shifts"].items())
             + f", {report['n_train_per_vendor']} train / {report['n_test_per_vendor']} "
             "balanced test subjects per vendor)",
             f"{'vendor':<8} {'per-vendor':>10} {'pooled':>8} {'headroom':>9}"]
    for vendor, row in report["per_vendor"].items():
        lines.append(f"{vendor:<8} {row['ba_per_vendor_oracle']:>10.4f} "
                     f"{row['ba_pooled_oracle']:>8.4f} {row['headroom']:>+9.4f}")
    lines.append(f"mean headroom {report['mean_headroom']:+.4f} (max "
                 f"{report['max_headroom']:+.4f}); pooled oracle BA "
                 f"{report['pooled_oracle_ba']:.4f}")
    unseen = report["unseen_centre"]
    lines.append(f"unseen centre {unseen['centre']} ({unseen['vendor']}): pooled oracle BA "
                 f"{unseen['ba_pooled_oracle']:.4f}")
    return "\n".join(lines)
