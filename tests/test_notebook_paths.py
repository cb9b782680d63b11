"""Notebooks write only into the repository, however they are started.

Papermill keeps the caller's working directory and JupyterLab uses the notebook's folder, so the
notebooks' folder defaults must not be relative paths. Here the README's papermill line runs from
the repository root and from an unrelated folder; nothing may appear outside the clone.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from duallora import paths
from duallora.notebooks.runner import list_notebooks


def readme_papermill_line() -> list[str]:
    """The one ``papermill ...`` command the README shows, split into words."""
    lines = [line.split("&&")[-1].strip()
             for line in (paths.repo_root() / "README.md").read_text().splitlines()
             if "papermill notebooks/" in line]
    assert len(lines) == 1, f"the README should show one papermill line, found {lines}"
    return shlex.split(lines[0].split("#")[0])


def test_folder_defaults_resolve_inside_the_repository(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data, reports = paths.notebook_folders(None, None)
    assert data == paths.repo_root() / "data" and reports == paths.repo_root() / "reports"
    # an explicit relative path is the caller's, taken from their working directory
    data, reports = paths.notebook_folders("mine", "")
    assert data == tmp_path / "mine" and reports == paths.repo_root() / "reports"


def test_shared_folder_env_is_duallora_shared_and_the_old_name_warns(tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.delenv("MEDDUAL_SHARED", raising=False)
    monkeypatch.setenv("DUALLORA_SHARED", str(tmp_path))
    assert paths.shared_dir() == tmp_path.resolve()
    monkeypatch.delenv("DUALLORA_SHARED")
    monkeypatch.setenv("MEDDUAL_SHARED", str(tmp_path))
    with pytest.warns(DeprecationWarning, match="DUALLORA_SHARED"):
        assert paths.shared_dir() == tmp_path.resolve()


def test_every_notebook_resolves_its_folders_through_the_kit() -> None:
    """Defaults are None (no relative path) and the setup cell resolves them before any use."""
    for notebook in list_notebooks():
        source = notebook.with_suffix(".py").read_text()
        assert re.search(r"^data_dir = None\b", source, re.M), notebook.name
        assert re.search(r"^out_dir = None\b", source, re.M), notebook.name
        code = [line for line in source.splitlines() if not line.lstrip().startswith("#")]
        assert not any("'../" in line or '"../' in line for line in code), notebook.name
        resolve = source.index("paths.notebook_folders(data_dir, out_dir)")
        first_use = min((m.start() for m in re.finditer(r"\bworkspace\(|\bout /", source)),
                        default=len(source))
        assert resolve < first_use, f"{notebook.name} uses a folder before resolving it"


def snapshot(folder: Path) -> set[str]:
    return {entry.name for entry in folder.iterdir()}


@pytest.mark.slow
def test_readme_papermill_line_writes_only_into_the_clone(tmp_path: Path) -> None:
    words = readme_papermill_line()
    assert words[0] == "papermill"
    repo = paths.repo_root()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = {repo.parent: snapshot(repo.parent), elsewhere: set()}
    env = {**os.environ, "MPLBACKEND": "Agg"}
    papermill = [sys.executable, "-m", "papermill"]
    (repo / "reports").mkdir(exist_ok=True)  # the README's `mkdir -p reports &&`
    # from the repository root, exactly as written ...
    subprocess.run(papermill + words[1:], cwd=repo, env=env, check=True, capture_output=True)
    # ... and from another folder, with the clone's paths spelled out
    absolute = [str(repo / w) if w.startswith(("notebooks/", "reports/")) else w
                for w in words[1:]]
    subprocess.run(papermill + absolute, cwd=elsewhere, env=env, check=True,
                   capture_output=True)
    for folder, before in outside.items():
        assert snapshot(folder) == before, f"written outside the clone, in {folder}"
    executed = repo / next(w for w in words[2:] if w.endswith(".ipynb"))
    text = executed.read_text()
    assert f"data_dir={repo / 'data'}" in text and f"out_dir={repo / 'reports'}" in text
