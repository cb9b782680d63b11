"""``duallora fm-gates``: is the frozen FM worth adapting? (the pre-registered FM gate)

    duallora fm-gates --cohort DIR [--cohort DIR ...] --weights W.safetensors
                      [--size tutorial] --out report.json

Probes the FM's per-frame features, the raw pixels and three random inits of the same preset on
each balanced harmonized cohort, then writes the gate rows and verdict to ``--out`` (features
are cached in ``<out stem>_features/`` next to it). Rules: ``duallora.model.gates`` and
docs/PHANTOM_FM.md ("Gates: how they are measured").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from duallora.base.presets import PRESETS

    parser = sub.add_parser("fm-gates", help="the FM gate: frozen FM features against raw "
                            "pixels and random inits (linear probe, paired bootstrap)",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, action="append", required=True,
                        help="a balanced harmonized cohort (metadata.csv + volumes/); repeat "
                        "for several")
    parser.add_argument("--weights", type=Path, required=True,
                        help="MAE-encoder weights of the FM (.safetensors)")
    parser.add_argument("--size", choices=sorted(PRESETS), default="tutorial",
                        help="model preset of the weights and the random inits (default "
                        "tutorial)")
    parser.add_argument("--out", type=Path, required=True, help="report file (.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError
    from duallora.model.gates import format_gate_report, gate_report

    if args.out.suffix != ".json":
        raise KitError(f"--out {args.out}: must end with .json")
    if args.out.exists() and not args.out.is_file():
        raise KitError(f"--out {args.out}: exists and is not a file")
    for cohort in args.cohort:
        if not (cohort / "metadata.csv").is_file():
            raise KitError(f"--cohort {cohort}: no metadata.csv (not a harmonized cohort)")
    cache = args.out.with_name(args.out.stem + "_features")
    report = gate_report(args.cohort, args.weights, size=args.size, cache_dir=cache,
                         progress=not args.no_progress)
    report["command"] = ("duallora fm-gates " + " ".join(f"--cohort {c}" for c in args.cohort)
                         + f" --weights {args.weights} --size {args.size} --out {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_gate_report(report))
    print(f"written to {args.out}")
    return 0
