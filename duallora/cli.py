"""The ``duallora`` command line (also ``python -m duallora``).

Each subcommand lives in its own module under ``duallora.commands`` and exposes
``register(subparsers)`` (declares its options) and ``run(args) -> int``. Wrong arguments and
bad input end with one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from duallora import __version__
from duallora.commands import COMMAND_MODULES
from duallora.errors import KitError, Terminated


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (plus the exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str, description: str, modules: Sequence[str]) -> argparse.ArgumentParser:
    """A parser whose subcommands come from ``modules`` (each with ``register`` and ``run``)."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in modules:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, dispatch to the chosen subcommand, and turn ``KitError`` into one clean line.

    Ctrl-C ends with exit 130 and SIGTERM (where a command handles it) with 143, the codes of a
    process killed by those signals, after the command's own cleanup has run."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KitError as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{parser.prog} {args.command}: interrupted (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "duallora",
        "Med-DualLoRA kit: notebooks, pretraining, federated training and deployment.",
        COMMAND_MODULES,
    )
    return run_cli(parser, argv)
