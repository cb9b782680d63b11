"""How the runner talks to its notebook kernels: progress by section, and a local transport.

Both plug into papermill's nbclient engine: ``execute_notebook`` passes extra keyword arguments
on to nbclient's ``NotebookClient``, which accepts a ready kernel manager (``km``) and a hook
called before every cell (``on_cell_start``, markdown cells included).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

HEADING = re.compile(r"^#{1,3}\s+(.+)$", re.MULTILINE)


def is_code(cell: Any) -> bool:
    """A cell that the kernel will run (nbclient skips empty code cells)."""
    return cell.get("cell_type") == "code" and bool(str(cell.get("source", "")).strip())


def first_heading(cell: Any) -> str | None:
    """The first markdown heading of a markdown cell, as plain text (None if it has none)."""
    if cell.get("cell_type") != "markdown":
        return None
    match = HEADING.search(str(cell.get("source", "")))
    return match.group(1).strip().strip("#").strip() if match else None


class SectionProgress:
    """A progress bar over one notebook's code cells, labelled with the section it is in.

    A long notebook used to show only "4/6" for most of an hour; this names the notebook and its
    current heading (e.g. ``04_med_duallora | The benchmark``), with tqdm's time left.
    """

    def __init__(self, notebook_name: str, n_code_cells: int, position: int = 1) -> None:
        self.name = notebook_name
        self.section = "start"
        self.started = 0
        self.bar = tqdm(total=n_code_cells, desc=notebook_name, unit="cell", position=position,
                        leave=False)

    def on_cell_start(self, cell: Any, cell_index: int, **_: Any) -> None:
        """nbclient's hook: a heading names the section; a code cell starting means the one
        before it finished."""
        heading = first_heading(cell)
        if heading:
            self.section = heading
            self.bar.set_postfix_str(heading[:60])
        elif is_code(cell):
            if self.started:
                self.bar.update(1)
            self.started += 1

    def close(self) -> None:
        self.bar.update(self.started - self.bar.n)
        self.bar.close()


@contextmanager
def local_kernel_config() -> Iterator[Any]:
    """nbclient configuration that starts kernels on Unix-domain sockets in a private folder.

    Over TCP every kernel warns that it runs "without encryption"; IPC sockets are files in a
    folder only this user can open, so there is nothing to warn about. nbclient still creates,
    shuts down and cleans up the kernel itself (``KernelManager`` settings apply to the async
    manager it uses, a subclass).
    """
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="duallora-kernel-") as folder:
        yield Config({"KernelManager": {"transport": "ipc", "ip": str(Path(folder) / "k")}})
