"""``reports/README.md``: a short, linked summary of what the notebooks produced."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd


def _table_preview(path: Path, max_rows: int = 12) -> str:
    frame = pd.read_csv(path)
    text = frame.head(max_rows).to_markdown(index=False, floatfmt=".3f") \
        if _has_tabulate() else frame.head(max_rows).to_string(index=False)
    return text if _has_tabulate() else f"```\n{text}\n```"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def write_reports_readme(out_dir: Path, wall_seconds: float | None = None) -> Path:
    """Write ``OUT/README.md`` listing executed notebooks, figures, and the headline tables.

    A table named ``headline*.csv`` is shown inline; every other table and figure is linked.
    """
    out_dir = Path(out_dir)
    lines = ["# Results of `make demo`", ""]
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    took = f", in {wall_seconds / 60:.1f} min" if wall_seconds is not None else ""
    lines += [f"Generated {stamp}{took} on the embedded phantom cohort.", ""]
    tables = sorted((out_dir / "tables").glob("*.csv"))
    for table in [t for t in tables if t.stem.startswith("headline")]:
        lines += [f"## {table.stem}", "", _table_preview(table), ""]
    lines += ["## Notebooks", ""]
    lines += [f"- [{p.name}](notebooks/{p.name})"
              for p in sorted((out_dir / "notebooks").glob("*.ipynb"))]
    lines += ["", "## Figures", ""]
    lines += [f"- [{p.name}](figures/{p.name})"
              for p in sorted((out_dir / "figures").glob("*.png"))]
    lines += ["", "## Tables", ""]
    lines += [f"- [{p.name}](tables/{p.name})" for p in tables]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme
