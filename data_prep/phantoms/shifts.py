"""Shift strengths and the documented ranges they scale (``shifts.toml``).

The three families (acquisition, case mix, annotation policy) each have a strength in [0, 1].
A centre parameter is ``ref + strength * (draw - ref)`` with ``draw`` uniform in the documented
``[lo, hi]``: strength 0 puts every centre on the reference (the no-shift control), strength 1
spreads centres over the range reported for real centres.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duallora.errors import KitError

CONFIG_PATH = Path(__file__).with_name("shifts.toml")
FAMILIES = ("acq", "mix", "label")


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The shift config (the packaged ``shifts.toml`` unless ``path`` is given), checked."""
    path = Path(path) if path is not None else CONFIG_PATH
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise KitError(f"{path}: unreadable shift config ({err})") from err
    for family in (*FAMILIES, "strengths"):
        if family not in config:
            raise KitError(f"{path}: missing section [{family}]")
    for family in FAMILIES:
        for name, value in config[family].items():
            if isinstance(value, list) and (len(value) != 3 or not value[1] <= value[2]):
                raise KitError(f"{path}: {family}.{name} must be [ref, lo, hi] with lo <= hi")
    return config


@dataclass(frozen=True)
class Shifts:
    """Strengths of the three shift families, and the config whose ranges they scale."""

    acq: float
    mix: float
    label: float
    config: dict[str, Any] = field(default_factory=load_config, compare=False, repr=False)

    def __post_init__(self) -> None:
        for family in FAMILIES:
            value = getattr(self, family)
            if not 0.0 <= value <= 1.0:
                raise KitError(f"shift strength {family}={value} is outside [0, 1]")

    def as_dict(self) -> dict[str, float]:
        return {family: float(getattr(self, family)) for family in FAMILIES}

    def spec(self) -> str:
        """The ``--shift`` text that reproduces these strengths."""
        return ",".join(f"{k}={v:g}" for k, v in self.as_dict().items())


def default_shifts(config: dict[str, Any] | None = None) -> Shifts:
    config = config or load_config()
    return Shifts(**{f: float(config["strengths"][f]) for f in FAMILIES}, config=config)


def parse_shifts(text: str | None, config: dict[str, Any] | None = None) -> Shifts:
    """``"acq=1,mix=1,label=0.5"`` -> ``Shifts``; omitted families keep the config's defaults."""
    config = config or load_config()
    values = default_shifts(config).as_dict()
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in FAMILIES:
            raise KitError(f"--shift: expected acq=A,mix=M,label=L, got {part.strip()!r}")
        try:
            values[key] = float(value)
        except ValueError as err:
            raise KitError(f"--shift: {key} needs a number in [0, 1], got {value!r}") from err
    return Shifts(**values, config=config)


def no_shift(config: dict[str, Any] | None = None) -> Shifts:
    """All three strengths 0: the control in which centres differ only by vendor appearance."""
    return Shifts(0.0, 0.0, 0.0, config=config or load_config())
