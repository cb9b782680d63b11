"""Shift strengths and the documented ranges they scale (``shifts.toml``).

Five families, each with a strength:

- centre-level (drawn once per centre with the cohort seed): ``acq`` (acquisition protocol),
  ``mix`` (case mix), ``label`` (annotation policy);
- subject-level: ``nuis``, the nuisance every real cine stack carries and harmonization does
  not remove (long-axis tilt, heart orientation, epicardial fat, SNR, coil shading), drawn per
  subject from the same ranges for every vendor;
- ``app``, vendor appearance: 1 keeps each vendor's scanner style (``appearance.STYLES``),
  0 gives every vendor the reference style, the only way to make vendors look alike;
- ``camps``, vendor annotation camps (positive controls only, 0 by default): the vendors split
  into two camps drawn with the cohort seed, and every centre of a camp moves its diagnostic
  cut-offs ``camps`` half-widths of the literature range towards more disease (one camp) or
  less (the other), so P(label | heart) differs by vendor, consistently within it.

A ranged parameter is ``ref + strength * (draw - ref)`` with ``draw`` uniform in the documented
``[lo, hi]``: strength 0 puts it on the reference, strength 1 spreads it over the range reported
for real centres or subjects. Strengths above 1 (up to :data:`MAX_STRENGTH`) move parameters
*outside* the literature ranges: they exist for positive controls of the benchmark only and
``Shifts.realistic`` is then false.

Named cells (``[cells]`` of ``shifts.toml``) are specs that can stand in for ``--shift``:
``--shift positive`` is ``--shift acq=1,mix=1,label=3,nuis=1,app=1``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duallora.errors import KitError

CONFIG_PATH = Path(__file__).with_name("shifts.toml")
CENTRE_FAMILIES = ("acq", "mix", "label")  # ranges drawn per centre
RANGED_FAMILIES = (*CENTRE_FAMILIES, "nuis")  # families with [ref, lo, hi] tables
FAMILIES = (*RANGED_FAMILIES, "app", "camps")
MAX_STRENGTH = 3.0  # above 1: outside the literature, positive controls only
# Strengths of families a config written before they existed does not name: no nuisance and
# the vendors' own appearance, i.e. exactly the generator those configs were written for.
LEGACY_STRENGTHS = {"nuis": 0.0, "app": 1.0, "camps": 0.0}


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The shift config (the packaged ``shifts.toml`` unless ``path`` is given), checked."""
    path = Path(path) if path is not None else CONFIG_PATH
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise KitError(f"{path}: unreadable shift config ({err})") from err
    for family in (*CENTRE_FAMILIES, "strengths"):
        if family not in config:
            raise KitError(f"{path}: missing section [{family}]")
    config.setdefault("nuis", {})
    config.setdefault("cells", {})
    config.setdefault("camps", {})
    for name, value in LEGACY_STRENGTHS.items():
        config["strengths"].setdefault(name, value)
    for family in RANGED_FAMILIES:
        for name, value in config[family].items():
            if isinstance(value, list) and (len(value) != 3 or not value[1] <= value[2]):
                raise KitError(f"{path}: {family}.{name} must be [ref, lo, hi] with lo <= hi")
    return config


@dataclass(frozen=True)
class Shifts:
    """Strengths of the shift families, and the config whose ranges they scale."""

    acq: float
    mix: float
    label: float
    nuis: float = 0.0
    app: float = 1.0
    camps: float = 0.0
    config: dict[str, Any] = field(default_factory=load_config, compare=False, repr=False)

    def __post_init__(self) -> None:
        for family in FAMILIES:
            value = getattr(self, family)
            top = 1.0 if family == "app" else MAX_STRENGTH
            if not 0.0 <= value <= top:
                raise KitError(f"shift strength {family}={value} is outside [0, {top:g}] (above "
                               "1 leaves the literature ranges: positive controls only)"
                               if top > 1 else
                               f"shift strength {family}={value} is outside [0, 1]")

    @property
    def realistic(self) -> bool:
        """Every strength within the literature ranges (at most 1)."""
        return all(getattr(self, family) <= 1.0 for family in FAMILIES)

    def as_dict(self) -> dict[str, float]:
        return {family: float(getattr(self, family)) for family in FAMILIES}

    def spec(self) -> str:
        """The ``--shift`` text that reproduces these strengths."""
        return ",".join(f"{k}={v:g}" for k, v in self.as_dict().items())

    def subject_ranges(self) -> dict[str, tuple[float, float]]:
        """Per-subject nuisance ranges at this strength: ``{name: (lo, hi)}``.

        ``ref + nuis * (U(lo, hi) - ref)`` is uniform on ``(ref + nuis*(lo-ref),
        ref + nuis*(hi-ref))``, so a subject draws directly from the returned interval.
        """
        out = {}
        for name, value in self.config["nuis"].items():
            ref, lo, hi = (float(v) for v in value)
            out[name] = (ref + self.nuis * (lo - ref), ref + self.nuis * (hi - ref))
        return out


def default_shifts(config: dict[str, Any] | None = None) -> Shifts:
    config = config or load_config()
    return Shifts(**{f: float(config["strengths"][f]) for f in FAMILIES}, config=config)


def parse_shifts(text: str | None, config: dict[str, Any] | None = None) -> Shifts:
    """``"acq=1,mix=1,label=0.5"``, a cell name (``"positive"``) or both
    (``"realistic,nuis=0"``: later entries win) -> ``Shifts``.

    Omitted families keep the config's default strengths.
    """
    config = config or load_config()
    values = default_shifts(config).as_dict()
    parts = []
    for part in (text or "").split(","):  # a cell name stands for its spec, in place
        name = part.strip()
        parts += str(config["cells"][name]["shift"]).split(",") if name in config["cells"] \
            else [part]
    for part in parts:
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in FAMILIES:
            cells = ", ".join(config["cells"]) or "none"
            raise KitError(f"--shift: expected {'=S,'.join(FAMILIES)}=S or a cell name "
                           f"({cells}), got {part.strip()!r}")
        try:
            values[key] = float(value)
        except ValueError as err:
            raise KitError(f"--shift: {key} needs a number, got {value!r}") from err
    return Shifts(**values, config=config)


def no_shift(config: dict[str, Any] | None = None) -> Shifts:
    """Centre families at 0 and no nuisance: centres differ only by vendor appearance."""
    return Shifts(0.0, 0.0, 0.0, 0.0, 1.0, 0.0, config=config or load_config())
