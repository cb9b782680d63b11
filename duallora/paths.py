"""Where things live: the repository, the read-only ``../shared`` folder, data and reports.

The kit never hard-codes machine paths: everything is relative to the repository root, and the
shared folder is looked up beside it (``../shared``) unless ``DUALLORA_SHARED`` points elsewhere
(every environment variable of the kit starts with ``DUALLORA_``; the old ``MEDDUAL_SHARED`` is
still read, with a ``DeprecationWarning``, for one release).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SHARED_ENV = "DUALLORA_SHARED"
OLD_SHARED_ENV = "MEDDUAL_SHARED"  # deprecated: read for one release


def repo_root() -> Path:
    """The checkout holding ``notebooks/`` (the package's parent folder)."""
    return REPO_ROOT


def shared_dir() -> Path | None:
    """The shared read-only folder (``../shared`` beside the repo), or None when absent."""
    env = os.environ.get(SHARED_ENV)
    if not env and os.environ.get(OLD_SHARED_ENV):
        warnings.warn(f"{OLD_SHARED_ENV} is deprecated; set {SHARED_ENV} instead",
                      DeprecationWarning, stacklevel=2)
        env = os.environ[OLD_SHARED_ENV]
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    return None


def real_samples_dir() -> Path | None:
    """``../shared/data/real-samples`` (six real preprocessed SAX volumes), if present."""
    shared = shared_dir()
    path = shared / "data" / "real-samples" if shared else None
    return path if path is not None and path.is_dir() else None


def reference_dir() -> Path | None:
    """``../shared/reference`` (CineMA parameter manifests), if present."""
    shared = shared_dir()
    path = shared / "reference" if shared else None
    return path if path is not None and path.is_dir() else None


def notebooks_dir() -> Path:
    return REPO_ROOT / "notebooks"


def default_reports_dir() -> Path:
    return REPO_ROOT / "reports"


def default_data_dir() -> Path:
    """Cache for the phantom cohort, harmonized volumes and prefix features (git-ignored)."""
    return REPO_ROOT / "data"


def notebook_folders(data_dir: str | Path | None, out_dir: str | Path | None
                     ) -> tuple[Path, Path]:
    """A notebook's ``data_dir`` and ``out_dir`` parameters as absolute folders.

    ``None`` (every notebook's default) means the repository's own ``data/`` and ``reports/``,
    however the kernel was started: papermill keeps the caller's working directory and JupyterLab
    uses the notebook's folder, so a relative default such as ``'../data'`` lands beside the clone
    when papermill runs from the repository root. A path given explicitly is the caller's choice
    and, like any command-line path, is taken relative to the working directory.
    """
    def resolve(value: str | Path | None, default: Path) -> Path:
        return default if value in (None, "") else Path(value).expanduser().resolve()

    return resolve(data_dir, default_data_dir()), resolve(out_dir, default_reports_dir())
