"""Export executed notebooks to standalone HTML, so results can be read in any browser.

Notebooks are committed without outputs (reviewable, small diffs), so on GitHub a reader sees
no figures. ``make demo`` therefore writes, next to each executed copy in
``reports/notebooks/``, an HTML page in ``reports/html/`` with every output (figures are
embedded as images, so the page needs no other file).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from duallora.errors import KitError


def export_html(executed: Iterable[Path], html_dir: Path) -> list[Path]:
    """Write ``html_dir/NAME.html`` for every executed notebook; return the pages in order."""
    import nbformat
    from nbconvert import HTMLExporter

    html_dir = Path(html_dir)
    html_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    pages = []
    for notebook in executed:
        notebook = Path(notebook)
        try:
            body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
        except Exception as err:  # unreadable notebook or a broken nbconvert template
            raise KitError(f"{notebook}: HTML export failed: {type(err).__name__}: "
                           f"{err}") from None
        page = html_dir / f"{notebook.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
    return pages
