"""Linear-probe foundation-model weights on a harmonized cohort (NOR vs disease).

    python tools/probe_fm.py --data HARMONIZED [--weights W.safetensors ...] [--seeds 0 1 2]
                             [--readout pooled|tokens|per_frame] [--fold-seeds 0 1 2] [--anatomy]

Prints one JSON line: AUC and balanced accuracy for each weights file (MAE encoder checkpoints,
CineMA layout) and for randomly initialised models of the same size (one per seed), all under
the same probe and readout (see duallora.model.probe). Scores are averaged over the probe's
fold shuffles (--fold-seeds), which matters on small cohorts. --anatomy adds the ridge probe's
R^2 for the cavity/myocardium volumes and ejection fractions of duallora.data.cardiac_measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duallora.data import MEASURE_NAMES, cardiac_measures, load_cohort_arrays  # noqa: E402
from duallora.model import build_convvit  # noqa: E402
from duallora.model.foundation import load_foundation_model  # noqa: E402
from duallora.model.probe import (  # noqa: E402
    READOUTS,
    linear_probe_r2,
    mean_probe_scores,
    probe_features,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, nargs="*", default=[])
    parser.add_argument("--size", default="tutorial")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="random-init baselines, one per seed")
    parser.add_argument("--readout", choices=READOUTS, default="pooled")
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--anatomy", action="store_true",
                        help="also probe cardiac volumes and ejection fractions (R^2)")
    args = parser.parse_args()
    n_frames = 1 if args.readout == "per_frame" else 2
    preset = build_convvit(args.size).config
    x, frame = load_cohort_arrays(args.data, image_size=preset.image_size,
                                  crop_size=preset.crop_size)
    labels = frame["label"].to_numpy()
    measures = cardiac_measures(args.data, frame).to_numpy() if args.anatomy else None
    models = {f"random_seed{seed}": build_convvit(args.size, n_frames=n_frames, seed=seed)
              for seed in args.seeds}
    for weights in args.weights:
        models[str(weights)] = load_foundation_model(weights, size=args.size, n_frames=n_frames)
    result: dict[str, object] = {"n": len(labels), "n_disease": int(labels.sum()),
                                 "readout": args.readout, "fold_seeds": args.fold_seeds}
    for name, model in models.items():
        features = probe_features(model, x, args.readout)
        auc, bacc = mean_probe_scores(features, labels, args.fold_seeds)
        result[name] = {"auc": round(auc, 4), "balanced_accuracy": round(bacc, 4)}
        if measures is not None:
            r2 = np.mean([linear_probe_r2(features, measures, seed=s) for s in args.fold_seeds],
                         axis=0)
            per_target = zip(MEASURE_NAMES, r2, strict=True)
            result[name]["r2"] = {k: round(float(v), 3) for k, v in per_target}
            result[name]["r2_mean"] = round(float(r2.mean()), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
