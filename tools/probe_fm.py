"""Linear-probe foundation-model weights on a harmonized cohort (NOR vs disease).

    python tools/probe_fm.py --data HARMONIZED [--weights W.safetensors ...] [--seeds 0 1 2]
                             [--readout pooled|tokens|per_frame] [--fold-seeds 0 1 2]

Prints one JSON line: AUC and balanced accuracy for each weights file (MAE encoder checkpoints,
CineMA layout) and for randomly initialised models of the same size (one per seed), all under
the same probe and readout (see duallora.model.probe). Scores are averaged over the probe's
fold shuffles (--fold-seeds), which matters on small cohorts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duallora.data import load_cohort_arrays  # noqa: E402
from duallora.model import build_convvit  # noqa: E402
from duallora.model.checkpoints import load_cinema_pretrained  # noqa: E402
from duallora.model.probe import READOUTS, mean_probe_scores, probe_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, nargs="*", default=[])
    parser.add_argument("--size", default="tutorial")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="random-init baselines, one per seed")
    parser.add_argument("--readout", choices=READOUTS, default="pooled")
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    n_frames = 1 if args.readout == "per_frame" else 2
    preset = build_convvit(args.size).config
    x, frame = load_cohort_arrays(args.data, image_size=preset.image_size,
                                  crop_size=preset.crop_size)
    labels = frame["label"].to_numpy()
    models = {f"random_seed{seed}": build_convvit(args.size, n_frames=n_frames, seed=seed)
              for seed in args.seeds}
    for weights in args.weights:
        model = build_convvit(args.size, n_frames=n_frames, seed=0)
        load_cinema_pretrained(model, weights)
        models[str(weights)] = model
    result: dict[str, object] = {"n": len(labels), "n_disease": int(labels.sum()),
                                 "readout": args.readout, "fold_seeds": args.fold_seeds}
    for name, model in models.items():
        auc, bacc = mean_probe_scores(probe_features(model, x, args.readout), labels,
                                      args.fold_seeds)
        result[name] = {"auc": round(auc, 4), "balanced_accuracy": round(bacc, 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
