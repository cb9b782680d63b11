"""The papermill runner: executes 00_welcome, and names notebook and cell on failure."""

from __future__ import annotations

import json

import pytest

from duallora.errors import KitError
from duallora.notebooks.html import export_html
from duallora.notebooks.runner import list_notebooks, run_notebooks

# nbformat is imported where used: it takes seconds to import and every pytest worker collects
# this file


def test_committed_notebooks_are_clean() -> None:
    """Notebooks are committed without outputs and each has a tagged parameters cell."""
    import nbformat

    for path in list_notebooks():
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        for name in ("quick", "data_dir", "out_dir", "seed"):
            assert name in tagged[0].source, f"{path.name}: parameters cell lacks {name}"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name} is committed with outputs"


def test_welcome_runs(tmp_path, capfd) -> None:
    import nbformat

    results = run_notebooks(out_dir=tmp_path / "reports", data_dir=tmp_path / "data",
                            quick=True, only=["00"])
    # the kernel talks over local sockets (no "running over TCP without encryption" warning),
    # and the progress names the notebook and the section it is in
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
    assert "00_welcome" in captured.err and "How to run them" in captured.err
    executed = tmp_path / "reports" / "notebooks" / "00_welcome.ipynb"
    assert [r.output for r in results] == [executed]
    nb = nbformat.read(executed, as_version=4)
    text = json.dumps(nb.cells[-1].outputs)
    assert "quick=True" in text  # the injected parameters reached the kernel
    assert (tmp_path / "reports" / "figures").is_dir()
    # what `make demo` does next: an HTML page per executed notebook, outputs included
    pages = export_html([r.output for r in results], tmp_path / "reports" / "html")
    assert pages == [tmp_path / "reports" / "html" / "00_welcome.html"]
    page = pages[0].read_text()
    assert "quick=True" in page and "Welcome to the Med-DualLoRA kit" in page


def test_failure_names_notebook_and_cell(tmp_path) -> None:
    import nbformat

    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick = True\ndata_dir = ''\nout_dir = ''\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, folder / "07_broken.ipynb")
    with pytest.raises(KitError) as err:
        run_notebooks(out_dir=tmp_path / "out", data_dir=tmp_path / "data", quick=True,
                      folder=folder)
    message = str(err.value)
    assert "07_broken.ipynb" in message and "broken on purpose" in message
    assert "raise ValueError" in message  # names the failing cell


def test_only_filters_and_rejects_unknown() -> None:
    assert [p.name for p in list_notebooks(only=["0"])] == ["00_welcome.ipynb"]
    with pytest.raises(KitError):
        list_notebooks(only=["99"])
