"""``duallora demo``: the main job on the embedded phantom default.

Runs every notebook at the tutorial default (not quick), which builds or reuses the phantom
cohort, trains every strategy and writes every figure and table, exports every executed notebook
to HTML (``reports/html/``, readable in any browser), then writes ``reports/README.md``, a short
summary linking them.
"""

from __future__ import annotations

import argparse
import time

from duallora.commands.notebooks import add_notebook_options


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="regenerate every notebook, figure and table",
                            description=__doc__)
    add_notebook_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duallora.notebooks.html import export_html
    from duallora.notebooks.reports import write_reports_readme
    from duallora.notebooks.runner import run_notebooks

    start = time.perf_counter()
    results = run_notebooks(out_dir=args.out, data_dir=args.data, quick=False, seed=args.seed,
                            only=args.only, cell_timeout=args.timeout)
    pages = export_html([r.output for r in results], args.out / "html")
    print(f"HTML pages: {pages[0].parent if pages else args.out / 'html'}")
    readme = write_reports_readme(args.out, wall_seconds=time.perf_counter() - start,
                                  notebook_seconds={r.name: r.seconds for r in results})
    print(f"demo done: {readme}")
    return 0
