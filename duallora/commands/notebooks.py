"""``duallora notebooks``: execute the numbered notebooks with papermill."""

from __future__ import annotations

import argparse
from pathlib import Path

from duallora import paths


def add_notebook_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``notebooks`` and ``demo``."""
    parser.add_argument("--out", type=Path, default=paths.default_reports_dir(),
                        help="reports folder (executed notebooks, figures, tables)")
    parser.add_argument("--data", type=Path, default=paths.default_data_dir(),
                        help="data cache folder passed to notebooks as data_dir")
    parser.add_argument("--seed", type=int, default=0, help="seed passed to every notebook")
    parser.add_argument("--only", action="append", metavar="NN",
                        help="run only notebook NN (repeatable), e.g. --only 01")
    parser.add_argument("--timeout", type=int, default=None,
                        help="per-cell timeout in seconds (default: none)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("notebooks", help="run notebooks/NN_*.ipynb in order with papermill",
                            description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="quick mode: tiny cohort and few rounds (what CI runs)")
    add_notebook_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duallora.notebooks.runner import run_notebooks

    run_notebooks(out_dir=args.out, data_dir=args.data, quick=args.quick, seed=args.seed,
                  only=args.only, cell_timeout=args.timeout)
    return 0
