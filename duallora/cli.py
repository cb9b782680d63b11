"""The ``duallora`` command line (also ``python -m duallora``).

Each subcommand lives in its own module under ``duallora.commands`` and exposes
``register(subparsers)`` (declares its options) and ``run(args) -> int``. Wrong arguments and
bad input end with one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

from duallora.base.command_line import build_parser, run_cli
from duallora.commands import COMMAND_MODULES


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "duallora",
        "Med-DualLoRA kit: notebooks, pretraining, federated training and deployment.",
        COMMAND_MODULES,
    )
    return run_cli(parser, argv)
