"""The Flower run config: ``duallora train``'s settings under Flower's names, and back.

Runs in: the ServerApp process (reading a run's config) and the launcher or any
``flwr run`` caller (writing one); ``python -m duallora.flower.run_config`` renders the app.

Flower run-config keys are TOML scalars with hyphenated names, declared in the app's
``pyproject.toml`` under ``[tool.flwr.app.config]``; ``flwr run --run-config`` may only override
keys declared there. Every ``TrainConfig`` field becomes one key (``local_epochs`` ->
``local-epochs``; lists become comma-separated strings, dicts JSON strings) with the same default,
so ``flwr run`` and ``duallora train`` start from the same settings. The committed
``app/pyproject.toml`` is rendered from ``TrainConfig`` (``python -m duallora.flower.run_config``
rewrites it, and a test fails when it drifts).

Two fields are not run config because they belong to each site (``site`` in their metadata):
``data`` (the node config's ``data-dir``) and ``cache_dir`` (under the node's ``state-dir``).
The deployment's own keys come from ``FlowerSettings``: where the server writes the run
directory, how many sites to wait for, timeouts and differential privacy.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from duallora import __version__
from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.flower.settings import FlowerSettings

APP_DIR = Path(__file__).resolve().parent / "app"
SITE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("site"))


def _defaults(settings_type: type) -> dict[str, Any]:
    instance = settings_type()
    return {flower_key(f.name): getattr(instance, f.name)
            for f in dataclasses.fields(settings_type)}


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
    return {**train_fields(), **_defaults(FlowerSettings)}


def to_run_config(config: TrainConfig) -> dict[str, Any]:
    """A resolved TrainConfig as run-config overrides (what the launcher passes to flwr run)."""
    return {flower_key(f.name): _to_scalar(getattr(config, f.name))
            for f in dataclasses.fields(TrainConfig) if f.name not in SITE_FIELDS}


def settings_run_config(settings: FlowerSettings) -> dict[str, Any]:
    """Deployment settings as run-config overrides (hyphenated keys)."""
    return {flower_key(f.name): getattr(settings, f.name)
            for f in dataclasses.fields(FlowerSettings)}


def _decode(settings_type: type, run_config: dict[str, Any], skip: tuple[str, ...] = ()
            ) -> dict[str, Any]:
    """The fields of ``settings_type`` present in ``run_config``, typed like their defaults."""
    defaults = settings_type()
    values: dict[str, Any] = {}
    for field in dataclasses.fields(settings_type):
        key = flower_key(field.name)
        if field.name in skip or key not in run_config:
            continue
        values[field.name] = _from_scalar(run_config[key], getattr(defaults, field.name), key)
    return values


def train_config_from_run_config(run_config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a run config describes (site fields left empty), validated.

    The run config holds concrete values: ``--quick`` was resolved once, by the command that
    made them (``duallora flower-local``), so ``quick`` here is only a record and changes
    nothing (applying it again would overwrite explicit values that equal a default).
    """
    return TrainConfig.from_dict(_decode(TrainConfig, run_config, SITE_FIELDS))


def flower_settings(run_config: dict[str, Any]) -> FlowerSettings:
    """The deployment settings of a run config, typed and validated."""
    return FlowerSettings(**_decode(FlowerSettings, run_config))


def render_app_pyproject() -> str:
    """The text of ``duallora/flower/app/pyproject.toml`` (see the module docstring)."""
    from duallora.flower.flat_toml import toml_value

    lines = [
        "# The Flower app of the Med-DualLoRA kit. GENERATED by",
        "#   python -m duallora.flower.run_config",
        "# from duallora.base.config.TrainConfig; edit that, not this file.",
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
        'serverapp = "duallora.flower.server.server_app:app"',
        'clientapp = "duallora.flower.site.client_app:app"',
        "",
        "[tool.flwr.app.config]",
        "# Training: the same names (hyphenated) and defaults as `duallora train`.",
    ]
    lines += [f"{key} = {toml_value(val)}" for key, val in train_fields().items()]
    lines.append("# Deployment: run directory, sites, timeouts, differential privacy.")
    lines += [f"{key} = {toml_value(val)}" for key, val in _defaults(FlowerSettings).items()]
    return "\n".join(lines) + "\n"


def write_app_pyproject(app_dir: Path = APP_DIR) -> Path:
    path = app_dir / "pyproject.toml"
    path.write_text(render_app_pyproject())
    return path


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write_app_pyproject()}\n")
