"""Flat ``key = value`` TOML: how node and run configs reach Flower without quoting trouble.

Runs in: the launcher's process (node configs, run-config overrides, ``localhost``) and
wherever ``run_config`` renders the Flower app's run-config defaults into ``app/pyproject.toml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

ConfigValue = str | int | float | bool


def toml_value(value: ConfigValue) -> str:
    """One TOML scalar. JSON string escapes are valid TOML basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_flat_toml(path: Path, values: Mapping[str, ConfigValue]) -> Path:
    """A flat ``key = value`` TOML file: how node and run config reach Flower without quoting
    trouble (``--node-config`` and ``--run-config`` accept a ``.toml`` path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key} = {toml_value(val)}\n" for key, val in values.items()))
    return path
