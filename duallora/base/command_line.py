"""Command-line plumbing shared by ``duallora`` and ``python -m data_prep``.

A parser whose usage errors are one line (exit 2), subcommands collected from modules that
each expose ``register(subparsers)`` and ``run(args) -> int``, and the dispatch that turns a
``KitError`` into one clean line instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Callable, Sequence

from duallora import __version__
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
    return run_guarded(f"{parser.prog} {args.command}", lambda: args.func(args))


def run_guarded(name: str, command: Callable[[], int | None]) -> int:
    """Run ``command`` as the command line ``name`` would: its exit code, ``KitError`` as one
    line on stderr and exit 2, SIGTERM 143, Ctrl-C 130 (a forked site worker runs this too)."""
    try:
        return int(command() or 0)
    except KitError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{name}: interrupted (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
