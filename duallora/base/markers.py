"""Build once, reuse while the settings match: the kit's one rule for cached folders.

A folder built from some settings (a phantom cohort, a harmonized cohort, a training run, a
benchmark cohort) gets a small JSON *marker* recording them once it is complete. A later call
with the same settings reuses the folder; other settings (or no marker: a partial build) redo
it. ``build_once`` adds a file lock, so processes asking at once build it once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_marker(path: Path) -> Any:
    """A JSON marker's content, or None when it is missing or unreadable (then: redo)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_marker(path: Path, values: dict[str, Any]) -> None:
    """Write a JSON marker atomically: a crash never leaves half a marker behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def is_built(marker: Path, wanted: Any, *needed: Path) -> bool:
    """Whether ``marker`` records ``wanted`` and every ``needed`` file is there (reuse it)."""
    return read_marker(marker) == wanted and all(Path(path).is_file() for path in needed)


def build_once(target: Path, wanted: dict[str, Any], build: Callable[[], None],
               marker: Path) -> None:
    """``build()`` fills ``target`` unless ``marker`` already records ``wanted``; under a file
    lock (``target.lock``), so processes asking at once build it once and the others wait and
    reuse it. Whatever ``target`` held without a matching marker (a partial or stale build)
    is removed first."""
    from filelock import FileLock

    with FileLock(f"{target}.lock"):
        if read_marker(marker) != wanted:
            shutil.rmtree(target, ignore_errors=True)
            build()
            write_marker(marker, wanted)
