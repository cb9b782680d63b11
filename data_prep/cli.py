"""``python -m data_prep``: build the phantom cohort and harmonize raw datasets.

    python -m data_prep phantoms  --out DIR [--scale F] [--seed N]
    python -m data_prep harmonize [--acdc DIR] [--mnms DIR] [--mnms2 DIR] --out DIR [--seed N]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from duallora.cli import OneLineParser, run_cli


def _register_phantoms(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("phantoms", help="write a synthetic multi-vendor cohort in the raw "
                            "ACDC / M&Ms / M&Ms-2 layouts")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the real datasets' subject counts (default 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_phantoms)


def _register_harmonize(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("harmonize", help="resample, crop and normalise ED/ES volumes into "
                            "one vendor-split cohort (metadata.csv + NIfTI volumes)")
    parser.add_argument("--acdc", type=Path, help="ACDC root (the download's database/ folder)")
    parser.add_argument("--mnms", type=Path, help="M&Ms root (the OpenDataset/ folder)")
    parser.add_argument("--mnms2", type=Path, help="M&Ms-2 root (holds dataset_information.csv)")
    parser.add_argument("--out", type=Path, required=True, help="harmonized output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the federated split")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all cores)")
    parser.set_defaults(func=_run_harmonize)


def _run_phantoms(args: argparse.Namespace) -> int:
    from data_prep.phantoms import write_phantom_cohort

    write_phantom_cohort(args.out, scale=args.scale, seed=args.seed)
    return 0


def _run_harmonize(args: argparse.Namespace) -> int:
    from data_prep.harmonize import harmonize_datasets

    harmonize_datasets(acdc=args.acdc, mnms=args.mnms, mnms2=args.mnms2, out=args.out,
                       seed=args.seed, workers=args.workers)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m data_prep", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    _register_phantoms(sub)
    _register_harmonize(sub)
    return run_cli(parser, argv)
