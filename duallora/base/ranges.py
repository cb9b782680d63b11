"""What values an option accepts, declared once beside its help text and checked in one place.

``TrainConfig`` fields (``base.config.setting(..., valid=...)``) and the data_prep options
use these. Every check ends in a ``KitError`` whose message names the option, says what it
accepts and repeats the value given, so a bad value is one line and exit code 2 however it
arrived (command line, ``config.json``, Flower run config). Numbers must also be finite: a NaN
passes every ``<``/``>`` comparison as False, which is how ``--lr nan`` used to slip through.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from duallora.errors import KitError

# numpy's legacy seeding (RandomState) accepts 0 .. 2**32 - 1; one bit less leaves room for the
# small offsets the kit adds to a seed (``seed + 1``), and is far more than anyone types
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Valid:
    """The accepted values of one option.

    ``lo``/``hi``: bounds of a number (``open_lo``/``open_hi``: excluded); ``choices``: the
    allowed strings, or for a list the allowed items (a callable is called when checked, for
    vocabularies that import heavy modules); ``pattern``: a regular expression a string must
    match in full; ``non_empty``: a list or string must hold something.
    """

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    pattern: str | None = None
    non_empty: bool = False
    what: str = ""  # how the pattern is described to the user
    noun: str = ""  # a choice error reads "unknown <noun> 'x'" (e.g. "unknown strategy")

    def describe(self) -> str:
        """The accepted values in words, e.g. ``in (0, 1]`` or ``one of fp32, bf16``."""
        if self.lo is not None or self.hi is not None:
            lo = "-inf" if self.lo is None else f"{self.lo:g}"
            hi = "inf" if self.hi is None else f"{self.hi:g}"
            return (f"in {'(' if self.open_lo or self.lo is None else '['}{lo}, {hi}"
                    f"{')' if self.open_hi or self.hi is None else ']'}")
        if self.choices is not None:
            return f"one of {', '.join(self._choices())}"
        if self.what:
            return self.what
        return "non-empty" if self.non_empty else "any value"

    def _choices(self) -> Sequence[str]:
        return self.choices() if callable(self.choices) else self.choices  # type: ignore[return-value]

    def check(self, option: str, value: Any) -> None:
        """Raise ``KitError`` naming ``option`` unless ``value`` is accepted."""
        if isinstance(value, float) and not math.isfinite(value):
            raise KitError(f"{option} must be a finite number {self.describe()}, not {value}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._check_number(option, value)
        elif isinstance(value, list):
            self._check_list(option, value)
        elif isinstance(value, str):
            self._check_text(option, value)

    def _check_number(self, option: str, value: float) -> None:
        low_bad = self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo)
        high_bad = self.hi is not None and (value >= self.hi if self.open_hi else value > self.hi)
        if low_bad or high_bad:
            raise KitError(f"{option} must be {self.describe()}, not {value}")

    def _check_list(self, option: str, value: list) -> None:
        if self.non_empty and not value:
            raise KitError(f"{option} must name at least one item")
        if self.choices is not None:
            allowed = self._choices()
            bad = [item for item in value if item not in allowed]
            if bad:
                raise KitError(f"{option}: unknown item(s) {', '.join(map(str, bad))}; choose "
                               f"from {', '.join(allowed)}")

    def _check_text(self, option: str, value: str) -> None:
        if self.non_empty and not value.strip():
            raise KitError(f"{option} must not be empty")
        if self.choices is not None and value not in self._choices() and self.noun:
            raise KitError(f"{option}: unknown {self.noun} {value!r}; choose one of "
                           f"{', '.join(self._choices())}")
        if self.choices is not None and value not in self._choices():
            raise KitError(f"{option} must be {self.describe()}, not {value!r}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise KitError(f"{option} must be {self.describe()}, not {value!r}")


def between(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
            open_hi: bool = False) -> Valid:
    """A number in ``[lo, hi]`` (an open end excluded; ``None``: unbounded on that side)."""
    return Valid(lo=lo, hi=hi, open_lo=open_lo, open_hi=open_hi)


def one_of(choices: Sequence[str] | Callable[[], Sequence[str]], noun: str = "") -> Valid:
    """One of ``choices`` (a string), or only those items (a list); ``noun`` names what a
    wrong value is in the message ("unknown strategy 'x'")."""
    return Valid(choices=choices, noun=noun)


def matching(pattern: str, what: str) -> Valid:
    """A string matching ``pattern`` in full, described to the user as ``what``."""
    return Valid(pattern=pattern, what=what)


NON_EMPTY = Valid(non_empty=True)
ANY = Valid()
SEED = between(0, MAX_SEED)


def check_type(option: str, value: Any, default: Any) -> None:
    """``value`` has the kind of ``default`` (bool, int, float, str, list of str, dict).

    Values from a hand-edited ``config.json`` or a Flower run config do not pass argparse, so
    ``"rounds": "8"`` or ``"seed": 1.5`` are caught here rather than deep in training.
    """
    kind = type(default)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is list:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                 list: "a list of strings", dict: "a JSON object"}
        raise KitError(f"{option} must be {names.get(kind, kind.__name__)}, not {value!r}")
