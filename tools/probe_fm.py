"""Linear-probe foundation-model weights on a harmonized cohort (NOR vs disease).

    python tools/probe_fm.py --data HARMONIZED [--weights W.safetensors ...] [--seeds 0 1 2]

Prints one JSON line: AUC and balanced accuracy for each weights file and for randomly
initialised models of the same size (one per seed), all under the same probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duallora.data import load_cohort_arrays  # noqa: E402
from duallora.model import build_convvit  # noqa: E402
from duallora.model.foundation import load_foundation_model  # noqa: E402
from duallora.model.probe import embed_all, linear_probe_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, nargs="*", default=[])
    parser.add_argument("--size", default="tutorial")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    args = parser.parse_args()
    preset = build_convvit(args.size).config
    x, frame = load_cohort_arrays(args.data, image_size=preset.image_size,
                                  crop_size=preset.crop_size)
    labels = frame["label"].to_numpy()
    result: dict[str, object] = {"n": len(labels), "n_disease": int(labels.sum())}
    for weights in args.weights:
        model = load_foundation_model(str(weights), size=args.size)
        result[str(weights)] = linear_probe_scores(embed_all(model, x), labels)
    for seed in args.seeds:
        result[f"random_seed{seed}"] = linear_probe_scores(
            embed_all(build_convvit(args.size, seed=seed), x), labels)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
