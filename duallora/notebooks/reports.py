"""Result tables on disk and ``reports/README.md``: a short, linked summary of the notebooks.

Notebooks save every table with :func:`save_table` (``OUT/tables/<name>.csv``) and every figure
with ``duallora.plots.save_figure`` (``OUT/figures/<name>.png``); names start with the
notebook's number, so they stay stable and sort by notebook. ``headline.csv`` (written by
notebook 04) is shown inline at the top of the README.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd

HEADLINE = "headline"


def save_table(frame: pd.DataFrame, out_dir: str | Path, name: str, index: bool = False
               ) -> Path:
    """Write ``OUT/tables/<name>.csv`` (floats with 4 decimals) and return its path."""
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=index, float_format="%.4f")
    return path


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, max_rows: int = 20) -> str:
    """A GitHub-markdown table (no extra dependency), floats to 3 decimals."""
    part = frame.head(max_rows)
    header = "| " + " | ".join(map(str, part.columns)) + " |"
    rule = "|" + "|".join("---" for _ in part.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |"
            for row in part.itertuples(index=False)]
    more = [f"\n({len(frame) - max_rows} more rows in the CSV)"] if len(frame) > max_rows else []
    return "\n".join([header, rule, *rows, *more])


def write_reports_readme(out_dir: Path, wall_seconds: float | None = None,
                         notebook_seconds: dict[str, float] | None = None) -> Path:
    """Write ``OUT/README.md``: headline table, notebooks (with wall times), figures, tables."""
    out_dir = Path(out_dir)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    took = f", in {wall_seconds / 60:.1f} min" if wall_seconds is not None else ""
    lines = ["# Results of `make demo`", "",
             f"Generated {stamp}{took} on the embedded phantom cohort (synthetic data: the "
             "numbers show the method working, not clinical performance).", ""]
    tables = sorted((out_dir / "tables").glob("*.csv"))
    headline = [t for t in tables if t.stem == HEADLINE]
    if headline:
        lines += ["## Headline: test metrics per strategy (macro over vendors)", "",
                  markdown_table(pd.read_csv(headline[0])), "",
                  f"Source: [tables/{headline[0].name}](tables/{headline[0].name}); per-vendor "
                  "results, confidence intervals and significance tests are in the tables below "
                  "and in notebook 04.", ""]
    else:
        lines += ["No `tables/headline.csv` yet (notebook 04 writes it).", ""]
    lines += ["## Notebooks", ""]
    for path in sorted((out_dir / "notebooks").glob("*.ipynb")):
        seconds = (notebook_seconds or {}).get(path.name)
        timing = f" ({seconds / 60:.1f} min)" if seconds is not None else ""
        page = out_dir / "html" / f"{path.stem}.html"
        html = f" ([HTML](html/{page.name}))" if page.is_file() else ""
        lines.append(f"- [{path.name}](notebooks/{path.name}){html}{timing}")
    lines += ["", "## Figures", ""]
    lines += [f"- [{p.name}](figures/{p.name})"
              for p in sorted((out_dir / "figures").glob("*.png"))]
    lines += ["", "## Tables", ""]
    lines += [f"- [{p.name}](tables/{p.name})" for p in tables]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme
