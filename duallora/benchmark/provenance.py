"""Which code produced a benchmark: the git commit and whether the tree had uncommitted changes.

``commit`` is the full hash of ``HEAD`` and ``dirty`` whether tracked files differ from it
(untracked files, such as data and reports, do not count); both are ``None`` when the code
does not run from a git checkout or git is unavailable.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=HERE, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> dict[str, Any]:
    """``{"commit": str | None, "dirty": bool | None}``."""
    head = _git("rev-parse", "HEAD")
    if head is None or not head.strip():
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.strip(), "dirty": None if status is None else bool(status.strip())}
