"""The Flower run config: ``duallora train``'s settings under Flower's names, and back.

Flower run-config keys are TOML scalars with hyphenated names, declared in the app's
``pyproject.toml`` under ``[tool.flwr.app.config]``; ``flwr run --run-config`` may only override
keys declared there. Every ``TrainConfig`` field becomes one key (``local_epochs`` ->
``local-epochs``; lists become comma-separated strings, dicts JSON strings) with the same default,
so ``flwr run`` and ``duallora train`` start from the same settings. The committed
``app/pyproject.toml`` is rendered from ``TrainConfig`` (``python -m duallora.flower.run_config``
rewrites it, and a test fails when it drifts).

Two fields are not run config because they belong to each site: ``data`` (the node config's
``data-dir``) and ``cache_dir`` (under the node's ``state-dir``). A few keys exist only here:
where the server writes the run directory, how many sites to wait for, and differential privacy.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from duallora import __version__
from duallora.errors import KitError
from duallora.federated.config import TrainConfig, quick_overrides

APP_DIR = Path(__file__).resolve().parent / "app"
SITE_FIELDS = ("data", "cache_dir")

# Settings of the Flower deployment itself (not of the training).
FLOWER_DEFAULTS: dict[str, Any] = {
    "out-dir": "",                 # run directory on the server machine ("" -> refuse to start)
    "num-clients": 0,              # wait for this many sites (0: take every connected site)
    "node-wait-timeout": 120.0,    # seconds to wait for the sites to connect
    "round-timeout": 900.0,        # seconds a round may take before the run fails
    "resume": False,               # continue the run in out-dir (like duallora train --resume)
    "overwrite": False,            # replace a run already in out-dir
    "dp-noise-multiplier": 0.0,    # > 0: clip each site's update, add Gaussian noise centrally
    "dp-clipping-norm": 1.0,       # L2 bound of one site's update of the shared parameters
}


def flower_key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _to_scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _from_scalar(value: Any, default: Any, key: str) -> Any:
    """Turn a run-config scalar back into the type of the TrainConfig default."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise KitError(f"run config {key} must be true or false, not {value!r}")
        return value
    if isinstance(default, list):
        return [item.strip() for item in str(value).split(",") if item.strip()]
    if isinstance(default, dict):
        try:
            parsed = json.loads(str(value) or "{}")
        except json.JSONDecodeError as err:
            raise KitError(f"run config {key} must be a JSON object ({err})") from err
        return parsed
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise KitError(f"run config {key} must be an integer, not {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise KitError(f"run config {key} must be a number, not {value!r}")
        return float(value)
    return str(value)


def train_fields() -> dict[str, Any]:
    """TrainConfig defaults that belong in the run config, by Flower key."""
    defaults = TrainConfig()
    return {flower_key(f.name): _to_scalar(getattr(defaults, f.name))
            for f in dataclasses.fields(TrainConfig) if f.name not in SITE_FIELDS}


def run_config_defaults() -> dict[str, Any]:
    """Every key of ``[tool.flwr.app.config]`` with its default."""
    return {**train_fields(), **FLOWER_DEFAULTS}


def to_run_config(config: TrainConfig) -> dict[str, Any]:
    """A resolved TrainConfig as run-config overrides (what the launcher passes to flwr run)."""
    return {flower_key(f.name): _to_scalar(getattr(config, f.name))
            for f in dataclasses.fields(TrainConfig) if f.name not in SITE_FIELDS}


def train_config_from_run_config(run_config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a run config describes (site fields left empty), validated.

    ``quick = true`` applies ``duallora train --quick``'s overrides to every key still at its
    default, so explicit values win, as on the command line.
    """
    defaults = TrainConfig()
    values: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        key = flower_key(field.name)
        if field.name in SITE_FIELDS or key not in run_config:
            continue
        values[field.name] = _from_scalar(run_config[key], getattr(defaults, field.name), key)
    if values.get("quick"):
        for name, quick_value in quick_overrides().items():
            if values.get(name, getattr(defaults, name)) == getattr(defaults, name):
                values[name] = quick_value
    config = TrainConfig.from_dict(values)
    config.validate()
    return config


def flower_settings(run_config: dict[str, Any]) -> dict[str, Any]:
    """The deployment settings (``FLOWER_DEFAULTS`` keys) of a run config, typed."""
    settings = {}
    for key, default in FLOWER_DEFAULTS.items():
        value = run_config.get(key, default)
        settings[key] = _from_scalar(value, default, key)
    if settings["dp-noise-multiplier"] < 0 or settings["dp-clipping-norm"] <= 0:
        raise KitError("dp-noise-multiplier must be >= 0 and dp-clipping-norm > 0")
    return settings


def render_app_pyproject() -> str:
    """The text of ``duallora/flower/app/pyproject.toml`` (see the module docstring)."""
    from duallora.flower.localhost.launcher import toml_value

    lines = [
        "# The Flower app of the Med-DualLoRA kit. GENERATED by",
        "#   python -m duallora.flower.run_config",
        "# from duallora.federated.config.TrainConfig; edit that, not this file.",
        "#",
        "# This folder is all that `flwr run` packages (a FAB holding this file). The ServerApp",
        "# and ClientApp it names live in the installed `duallora` package, which every site",
        "# (SuperLink and each SuperNode) installs itself: code and weights are versioned with",
        "# the kit, never shipped inside a run.",
        "",
        "[project]",
        'name = "duallora-flower"',
        f'version = "{__version__}"',
        'description = "Med-DualLoRA: federated dual-LoRA fine-tuning of a cardiac-MRI '
        'foundation model"',
        'license = "MIT"',
        f'dependencies = ["med-duallora-kit=={__version__}", "flwr>=1.20"]',
        "",
        "[tool.flwr.app]",
        'publisher = "duallora"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "duallora.flower.server_app:app"',
        'clientapp = "duallora.flower.client_app:app"',
        "",
        "[tool.flwr.app.config]",
        "# Training: the same names (hyphenated) and defaults as `duallora train`.",
    ]
    lines += [f"{key} = {toml_value(val)}" for key, val in train_fields().items()]
    lines.append("# Deployment: run directory, sites, timeouts, differential privacy.")
    lines += [f"{key} = {toml_value(val)}" for key, val in FLOWER_DEFAULTS.items()]
    return "\n".join(lines) + "\n"


def write_app_pyproject(app_dir: Path = APP_DIR) -> Path:
    path = app_dir / "pyproject.toml"
    path.write_text(render_app_pyproject())
    return path


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write_app_pyproject()}\n")
