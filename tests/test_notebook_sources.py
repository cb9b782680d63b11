"""Jupytext pairs: every ``notebooks/NN_topic.py`` (the source of truth) matches its ``.ipynb``.

The committed ``.ipynb`` is what papermill, ``make demo`` and a student opening JupyterLab run;
the percent-format ``.py`` is what is reviewed and linted. If someone edits one without
``jupytext --sync``, the two drift apart silently; these tests make that a failure.
"""

from __future__ import annotations

import ast
import copy
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from duallora import paths
from duallora.notebooks.runner import list_notebooks

if TYPE_CHECKING:
    import nbformat

NOTEBOOKS = paths.notebooks_dir()


# jupytext and nbformat are imported where used: importing them takes several seconds (their
# JSON-schema checks build a grammar) and every pytest worker collects this file.
def read_ipynb(path: Path) -> nbformat.NotebookNode:
    import nbformat

    return nbformat.read(path, as_version=4)


def read_percent_py(path: Path) -> nbformat.NotebookNode:
    import jupytext

    return jupytext.read(path)


def cell_view(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    """What must agree between the two files of a pair: type, source and tags of every cell."""
    return [(cell.cell_type, cell.source, list(cell.metadata.get("tags", [])))
            for cell in nb.cells]


def pair_differences(text_nb: nbformat.NotebookNode, ipynb: nbformat.NotebookNode) -> list[str]:
    """Human-readable differences (empty when the pair is in sync)."""
    problems = []
    left, right = cell_view(text_nb), cell_view(ipynb)
    if len(left) != len(right):
        problems.append(f"{len(left)} cells in the .py, {len(right)} in the .ipynb")
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            what = "type" if a[0] != b[0] else "source" if a[1] != b[1] else "tags"
            problems.append(f"cell {index}: {what} differs")
    if text_nb.metadata.get("kernelspec") != ipynb.metadata.get("kernelspec"):
        problems.append("kernelspec differs")
    return problems


def test_jupytext_config_pairs_ipynb_with_percent_py() -> None:
    config = tomllib.loads((NOTEBOOKS / "jupytext.toml").read_text())
    assert set(config["formats"].split(",")) == {"ipynb", "py:percent"}


@pytest.mark.parametrize("ipynb", list_notebooks(), ids=lambda p: p.stem[:2])
def test_pair_in_sync(ipynb) -> None:
    source = ipynb.with_suffix(".py")
    assert source.is_file(), f"{ipynb.name} has no jupytext source {source.name}"
    text_nb = read_percent_py(source)
    committed = read_ipynb(ipynb)
    problems = pair_differences(text_nb, committed)
    assert not problems, (f"{source.name} and {ipynb.name} are out of sync "
                          f"({'; '.join(problems[:3])}): run `jupytext --sync notebooks/*.py`")


def test_every_source_has_a_notebook() -> None:
    sources = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")}
    notebooks = {p.stem for p in list_notebooks()}
    assert sources == notebooks


def test_sync_check_catches_an_edit() -> None:
    """The comparison itself: an edited cell, a lost tag or a dropped cell is reported."""
    ipynb = list_notebooks(only=["01"])[0]
    text_nb = read_percent_py(ipynb.with_suffix(".py"))
    committed = read_ipynb(ipynb)
    assert pair_differences(text_nb, committed) == []
    edited = copy.deepcopy(text_nb)
    edited.cells[2].source += "\nprint('edited in the .py only')"
    assert pair_differences(edited, committed) == ["cell 2: source differs"]
    untagged = copy.deepcopy(committed)
    for cell in untagged.cells:
        cell.metadata.pop("tags", None)
    assert any("tags" in p for p in pair_differences(text_nb, untagged))
    shorter = copy.deepcopy(committed)
    shorter.cells.pop()
    assert pair_differences(text_nb, shorter)[0].endswith("in the .ipynb")


@pytest.mark.parametrize("ipynb", list_notebooks(), ids=lambda p: p.stem[:2])
def test_notebook_default_is_the_tutorial(ipynb) -> None:
    """Opened in JupyterLab and run top to bottom, a notebook runs the tutorial, not quick mode
    (CI and ``make test`` inject ``quick=True`` through papermill)."""
    nb = read_ipynb(ipynb)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    quick = [ast.literal_eval(node.value) for node in ast.parse(params.source).body
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
             and node.targets[0].id == "quick"]
    assert quick == [False], f"{ipynb.name}: the parameters cell should set quick = False"
