"""Command-line options generated from a settings dataclass (``TrainConfig``, ``FlowerSettings``).

Every field declared with ``base.config.setting`` becomes ``--field-name`` with its help
text, so ``duallora train`` and ``duallora flower-local`` offer the same training options and a
new field appears on both without further code. Options default to "not given"
(``argparse.SUPPRESS``), so ``explicit_values`` knows exactly what the user typed: that is what
lets ``--quick`` be resolved once, with explicit options always winning.

Booleans: a field that defaults to False is switched on by ``--name``; one that defaults to True
is switched off by ``--no-name``. Lists are comma-separated; dicts are JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable
from typing import Any


def cli_name(field: dataclasses.Field) -> str:
    """The option a field is offered as (``--no-...`` for booleans that default to True)."""
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def offered_fields(settings_type: type, skip: Iterable[str] = ()) -> list[dataclasses.Field]:
    """Fields of ``settings_type`` that the command line offers (``cli`` metadata, not skipped)."""
    skipped = set(skip)
    return [f for f in dataclasses.fields(settings_type)
            if f.metadata.get("cli", False) and f.name not in skipped]


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def _help(field: dataclasses.Field, default: Any) -> str:
    shown = ",".join(default) if isinstance(default, list) else default
    text = f"{field.metadata['help']} (default: {json.dumps(shown) if shown == '' else shown}"
    quick = field.metadata.get("quick")
    if quick is not None:
        text += f"; --quick: {quick}"
    return text.replace("%", "%%") + ")"


def add_settings_options(parser: argparse.ArgumentParser, settings_type: type,
                         skip: Iterable[str] = (), title: str | None = None) -> None:
    """Add one option per offered field of ``settings_type`` to ``parser``."""
    group = parser.add_argument_group(title) if title else parser
    for field in offered_fields(settings_type, skip):
        default = _default_of(field)
        common: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS,
                                  "help": _help(field, default)}
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            group.add_argument(cli_name(field), action=action, **common)
            continue
        if isinstance(default, list):
            kind: Any = _comma_list
        elif isinstance(default, dict):
            kind = _json_object
        else:
            kind = type(default)
        group.add_argument(cli_name(field), type=kind, metavar=field.metadata.get("metavar"),
                           **common)


def explicit_values(args: argparse.Namespace, settings_type: type,
                    skip: Iterable[str] = ()) -> dict[str, Any]:
    """The offered fields the user actually gave, by field name."""
    given = vars(args)
    return {f.name: given[f.name] for f in offered_fields(settings_type, skip)
            if f.name in given}
