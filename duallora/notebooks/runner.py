"""Execute the numbered notebooks headlessly with papermill.

Every notebook in ``notebooks/`` is named ``NN_topic.ipynb`` and has a cell tagged
``parameters`` declaring at least ``quick``, ``data_dir``, ``out_dir`` and ``seed``. The runner
injects those, writes the executed copy to ``OUT/notebooks/`` and lets the notebook save its
figures under ``OUT/figures/`` and tables under ``OUT/tables/``. A failing cell stops the run with
a ``KitError`` naming the notebook and the cell, so the command exits non-zero in one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from duallora import paths
from duallora.errors import KitError
from duallora.notebooks.kernel import SectionProgress, is_code, local_kernel_config

NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_[\w-]+\.ipynb$")


@dataclass(frozen=True)
class NotebookResult:
    name: str
    output: Path
    seconds: float


def list_notebooks(folder: Path | None = None, only: Iterable[str] | None = None) -> list[Path]:
    """Numbered notebooks in order; ``only`` keeps those numbered ``"01"`` (or ``1``) etc."""
    folder = folder or paths.notebooks_dir()
    found = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if only:
        wanted = {f"{int(n):02d}" for n in only if str(n).isdigit()}
        bad = [n for n in only if not str(n).isdigit()]
        if bad:
            raise KitError(f"--only expects notebook numbers like 01, got {bad}")
        found = [p for p in found if p.name[:2] in wanted]
        if not found:
            raise KitError(f"no notebook numbered {sorted(wanted)} in {folder}")
    if not found:
        raise KitError(f"no numbered notebooks (NN_name.ipynb) in {folder}")
    return found


def _failing_cell(executed: Path) -> str:
    """Describe the first cell of an executed notebook that raised (index and first source line)."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # the executed copy may be missing if the kernel died early
        return "unknown cell"
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return f"cell {index} ({first[:60]!r})"
    return "unknown cell"


def _count_code_cells(notebook: Path) -> int:
    """Code cells the kernel will run, plus the one papermill injects with the parameters."""
    import nbformat

    return sum(map(is_code, nbformat.read(notebook, as_version=4).cells)) + 1


def run_notebooks(
    out_dir: Path,
    data_dir: Path,
    quick: bool,
    seed: int = 0,
    only: Iterable[str] | None = None,
    cell_timeout: int | None = None,
    folder: Path | None = None,
) -> list[NotebookResult]:
    """Run the notebooks in order; stop at the first failure with a ``KitError``."""
    import time

    import papermill as pm

    notebooks = list_notebooks(folder, only)
    out_dir = Path(out_dir).resolve()
    data_dir = Path(data_dir).resolve()
    executed_dir = out_dir / "notebooks"
    for sub in ("notebooks", "figures", "tables"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")

    results: list[NotebookResult] = []
    bar = tqdm(notebooks, desc="notebooks", unit="nb")
    for notebook in bar:
        bar.set_postfix_str(notebook.name)
        output = executed_dir / notebook.name
        start = time.perf_counter()
        progress = SectionProgress(notebook.stem, _count_code_cells(notebook))
        try:
            with local_kernel_config() as kernel_config:
                pm.execute_notebook(
                    str(notebook),
                    str(output),
                    parameters={"quick": quick, "data_dir": str(data_dir),
                                "out_dir": str(out_dir), "seed": seed},
                    cwd=str(notebook.parent),
                    progress_bar=False,
                    execution_timeout=cell_timeout,
                    kernel_name="python3",
                    config=kernel_config,
                    on_cell_start=progress.on_cell_start,
                )
        except pm.PapermillExecutionError as err:
            raise KitError(
                f"notebook {notebook.name} failed in {_failing_cell(output)}: "
                f"{err.ename}: {str(err.evalue).splitlines()[0] if err.evalue else ''} "
                f"(executed copy: {output})"
            ) from None
        except Exception as err:  # kernel death, missing parameters cell, unreadable notebook
            raise KitError(f"notebook {notebook.name} could not run: "
                           f"{type(err).__name__}: {err}") from None
        finally:
            progress.close()
        seconds = time.perf_counter() - start
        results.append(NotebookResult(notebook.name, output, seconds))
        tqdm.write(f"  {notebook.name}: {seconds:.1f} s -> {output}")
    return results
