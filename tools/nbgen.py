"""Shared helpers of the ``tools/make_nbNN.py`` scripts that generate the numbered notebooks.

Notebooks are generated (never hand-edited) so they stay reviewable as code and are committed
without outputs. Each has exactly one cell tagged ``parameters`` that papermill overrides.
"""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def md(text: str) -> nbf.NotebookNode:
    return nbf.v4.new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbf.NotebookNode:
    return nbf.v4.new_code_cell(text.strip("\n"))


def parameters(extra: str = "") -> nbf.NotebookNode:
    """The papermill parameters cell: the four shared knobs, then the notebook's own."""
    text = ("# Parameters (papermill injects its own values below this cell)\n"
            "quick = True          # tiny cohort and few rounds (CI), False for the tutorial default\n"
            "data_dir = '../data'  # cache shared by all notebooks (cohort, features, runs)\n"
            "out_dir = '../reports'  # figures/ and tables/ are written here\n"
            "seed = 0\n")
    cell = code(text + extra.strip("\n"))
    cell.metadata["tags"] = ["parameters"]
    return cell


def write(cells: list[nbf.NotebookNode], name: str) -> Path:
    nb = nbf.v4.new_notebook()
    for index, cell in enumerate(cells):
        cell["id"] = f"{Path(name).stem[:2]}-{index:02d}"  # stable ids: regenerating is a no-op
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = NOTEBOOKS / name
    nbf.write(nb, path)
    return path
