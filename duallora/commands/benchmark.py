"""``duallora benchmark``: the pre-declared hypotheses H1-H3 at one of the plans' budgets.

    duallora benchmark [--plan demo|full|paper] [--data DIR] [--out reports/benchmark]
                       [--seeds 0,1,2] [--cohort-seeds 0] [--fm phantom|PATH] [--size]

Builds (or reuses) the plan's v2 phantom cohorts under ``--data``, trains (or reuses) every run,
then writes ``--out``: ``benchmark.json`` (every number, its interval and its provenance),
``benchmark.md``, ``headline.md`` and ``figures/``. See docs/BENCHMARK.md.

``--size`` only sizes the plan (cohorts, runs, estimated CPU time and disk, and what ``--data``
already holds: those cohorts and runs are reused) and trains nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _seeds(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}"
                                         ) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one seed")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    from duallora.benchmark.plans import PLANS

    parser = sub.add_parser("benchmark", help="the pre-declared benchmark (H1-H3) with its "
                            "statistics", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="demo",
                        help="budget: demo (inside make demo), full (CPU overnight), paper "
                        "(GPU), test (seconds)")
    parser.add_argument("--data", type=Path, default=Path("data/benchmark"),
                        help="cohorts, prefix cache and runs (reused across calls)")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmark"),
                        help="where the report goes")
    parser.add_argument("--seeds", type=_seeds, default=None,
                        help="training seeds (default: the plan's)")
    parser.add_argument("--cohort-seeds", type=_seeds, default=None,
                        help="cohort seeds (default: the plan's)")
    parser.add_argument("--fm", default=None,
                        help="foundation weights: phantom (committed), none, or a CineMA file "
                        "(default: the plan's)")
    parser.add_argument("--size", action="store_true",
                        help="print the plan's cohorts, runs, estimated CPU time and disk (and "
                        "what --data already holds), then stop: nothing is built or trained")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duallora.benchmark import get_plan, run_benchmark

    plan = get_plan(args.plan).with_options(args.seeds, args.cohort_seeds, args.fm)
    if args.size:
        from duallora.benchmark.sizing import plan_size, size_text

        print(size_text(plan_size(plan, args.data)))
        return 0
    result = run_benchmark(plan, args.data, args.out, progress=not args.no_progress)
    print((Path(args.out) / "headline.md").read_text())
    print(f"benchmark report: {result['markdown']}")
    return 0
