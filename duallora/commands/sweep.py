"""``duallora sweep``: several strategies x seeds, each its own ``duallora train``, then tables.

    duallora sweep --data HARMONIZED --out DIR [--seeds 0 1 2] [--strategies ...]
                   [--jobs 4] [--threads 2] [-- extra `duallora train` options]

Writes DIR/<strategy>-s<seed>/ run directories, DIR/results.csv (one row per strategy, seed and
scope) and DIR/paired.csv (every strategy against med_duallora on the same test subjects).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duallora.base.config import STRATEGY_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sweep", help="train strategies x seeds in parallel and tabulate "
                            "them", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="harmonized cohort folder")
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES),
                        metavar="NAME", help=f"default: all ({', '.join(STRATEGY_NAMES)})")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per run")
    parser.add_argument("train_options", nargs=argparse.REMAINDER, metavar="-- OPTIONS",
                        help="passed to every `duallora train` (e.g. -- --quick --rounds 4)")
    parser.set_defaults(func=run)


def check_options(args: argparse.Namespace) -> None:
    """Every run's options are validated here, before the first run starts: a bad value
    would otherwise fail each ``duallora train`` process in turn (and the tables be empty)."""
    from duallora.base.command_line import build_parser
    from duallora.base.ranges import SEED, between
    from duallora.commands.train import config_from_args

    for seed in args.seeds:
        SEED.check("--seeds", seed)
    between(1, 1024).check("--jobs", args.jobs)
    between(1, 1024).check("--threads", args.threads)
    extra = [e for e in args.train_options if e != "--"]
    parser = build_parser("duallora sweep --", "", ["duallora.commands.train"])
    for strategy in args.strategies:  # argparse errors exit 2 with one line, as everywhere
        train_args = parser.parse_args(["train", "--data", str(args.data), "--strategy",
                                        strategy, "--out", str(args.out), *extra])
        config_from_args(train_args)


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError
    from duallora.federated.sweep import run_sweep

    if not args.data.is_dir():
        raise KitError(f"--data {args.data}: no such folder")
    if args.out.exists() and not args.out.is_dir():
        raise KitError(f"--out {args.out}: exists and is not a folder")
    check_options(args)

    out = run_sweep(args.data, args.out, args.seeds, args.strategies, jobs=args.jobs,
                    threads=args.threads, extra=args.train_options)
    print(f"sweep done: {out / 'results.csv'} and {out / 'paired.csv'}")
    return 0
