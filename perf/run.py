"""``make bench``: the cost of every strategy, the prefix cache, merged inference, data, notebooks.

    python perf/run.py [--quick] [--update-docs] [--skip SECTION ...] [--out DIR]

Sections: data (phantom cohort, harmonization throughput), strategies (tutorial preset and
CineMA base: parameters, exact message bytes, training time, peak memory), prefix (med_duallora
round with/without the prefix cache), inference (plain vs unmerged vs merged adapters),
notebooks (the series in quick mode), flower (localhost Flower vs in-process, when available).
Writes ``OUT/benchmarks.json`` and ``OUT/benchmarks.md``; ``--update-docs`` copies the table
into docs/PERFORMANCE.md between the bench markers (``make bench`` does). A full run takes
about 10 minutes on 2 idle cores; ``--quick`` is a smoke run of about 2 minutes (fewer
repeats, one process for all strategies).

Each strategy is measured in its own process so that its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PERFORMANCE_DOC = REPO / "docs" / "PERFORMANCE.md"  # its bench-marker block is this report's
if str(REPO) not in sys.path:  # run as a script from anywhere: the package sits beside us
    sys.path.insert(0, str(REPO))

from duallora.errors import KitError  # noqa: E402

SECTIONS = ("data", "strategies", "prefix", "inference", "notebooks", "flower")
STRATEGIES = ("local", "centralized", "fedavg_full", "fedavg_lora", "ffa_lora", "fedsa_lora",
              "med_duallora")
RESULT_MARK = "BENCH-RESULT "
BENCH_SCALE = {"quick": 0.01, "full": 0.05}  # phantom cohort (fraction of the real datasets)


def plan(quick: bool) -> dict[str, Any]:
    """Repeat counts: enough for a median and a spread in ~10 min (full) or ~2 min (quick)."""
    if quick:
        return {"epoch": (1, 2), "base_step": (0, 1), "round": (1, 2), "inference": (1, 3),
                "harmonize": 1, "base_batch": 1, "inference_batch": 4,
                "base_timed": ("med_duallora",), "isolated": False}
    return {"epoch": (1, 5), "base_step": (1, 3), "round": (1, 5), "inference": (2, 10),
            "harmonize": 2, "base_batch": 2, "inference_batch": 8,
            "base_timed": STRATEGIES, "isolated": True}


# -- workers (one process each) ----------------------------------------------------------------
def worker(task: dict[str, Any]) -> Any:
    """Run one measurement in this process and return its JSON-able result."""
    import torch

    from perf import measure

    if task.get("threads"):
        torch.set_num_threads(int(task["threads"]))
    kind = task["kind"]
    if kind == "strategy":
        rows = []
        for name in task["strategies"]:
            config = measure.bench_config(task["preset"], name, task["data"], task["cache"])
            repeats = task["repeats"] if name in task.get("timed", STRATEGIES) else 0
            if repeats == 0:
                rows.append(_costs_only(config))
                continue
            row = measure.measure_strategy(config, repeats=repeats, warmup=task["warmup"],
                                           step_batch=task.get("step_batch", 0))
            row["isolated"] = len(task["strategies"]) == 1
            rows.append(row)
        return rows
    if kind == "base_prefix":
        config = measure.bench_config("base", "med_duallora")
        return measure.measure_prefix_compute(config, task["n_subjects"])
    if kind == "prefix":
        config = measure.bench_config("tutorial", "med_duallora", task["data"], task["cache"])
        return measure.measure_prefix_cache(config, repeats=task["repeats"],
                                            warmup=task["warmup"])
    if kind == "inference":
        config = measure.bench_config("tutorial", "med_duallora")
        return measure.measure_inference(config, batch=task["batch"], repeats=task["repeats"],
                                         warmup=task["warmup"])
    raise KitError(f"unknown benchmark worker kind {kind!r}")


def _costs_only(config: Any) -> dict[str, Any]:
    from duallora.federated.client_model import build_client_model
    from perf.costs import strategy_costs
    from perf.measure import N_CLIENTS

    row = strategy_costs(build_client_model(config), N_CLIENTS)
    row.update({"preset": config.model_size, "blocks": config.blocks, "fm": config.fm})
    return row


THREADS: dict[str, int] = {}  # --threads, passed on to every worker


def spawn(task: dict[str, Any], timeout: float = 900.0) -> Any:
    """Run ``worker(task)`` in a fresh Python process; errors come back as ``{"error": ...}``."""
    task = {**task, **THREADS}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"worker exited {done.returncode}: {tail}"}


# -- sections ----------------------------------------------------------------------------------
def section_data(ws: Any, scale: float, tmp: Path, settings: dict[str, Any],
                 measure_harmonization: bool) -> dict[str, Any]:
    """The benchmark's phantom cohort (built once, then reused from the data folder) and, unless
    skipped, the harmonization throughput measured on its raw files."""
    from duallora.notebooks.experiments import ensure_cohort, ensure_phantoms
    from perf import measure

    start = time.perf_counter()
    raw = ensure_phantoms(ws, scale)
    cohort = ensure_cohort(ws, scale)
    import pandas as pd

    out: dict[str, Any] = {"cohort": {
        "scale": scale, "n_subjects": len(pd.read_csv(cohort / "metadata.csv")),
        "ready_seconds_this_run": time.perf_counter() - start}}
    if measure_harmonization:
        out["harmonization"] = measure.measure_harmonization(
            raw, tmp / "harmonize", repeats=settings["harmonize"], workers=2)
    return out


def section_strategies(data: Path, cache: Path, settings: dict[str, Any], log: Any
                       ) -> dict[str, Any]:
    warm, reps = settings["epoch"]
    base_warm, base_reps = settings["base_step"]
    out: dict[str, Any] = {"tutorial": [], "base": []}
    common = {"kind": "strategy", "data": str(data), "cache": str(cache)}
    if settings["isolated"]:
        for name in STRATEGIES:
            log(f"strategies: tutorial {name}")
            out["tutorial"] += _rows(spawn({**common, "preset": "tutorial", "strategies": [name],
                                            "repeats": reps, "warmup": warm}), name)
        timed = [name for name in STRATEGIES if name in settings["base_timed"]]
        untimed = [name for name in STRATEGIES if name not in settings["base_timed"]]
        base = {**common, "preset": "base", "repeats": base_reps, "warmup": base_warm,
                "step_batch": settings["base_batch"], "timed": timed}
        for name in timed:
            log(f"strategies: base {name}")
            out["base"] += _rows(spawn({**base, "strategies": [name]}), name)
        if untimed:  # bytes and parameters only: one process is enough
            log(f"strategies: base bytes of {', '.join(untimed)}")
            out["base"] += _rows(spawn({**base, "strategies": untimed}), "untimed")
        out["base"].sort(key=lambda row: STRATEGIES.index(row["strategy"])
                         if row.get("strategy") in STRATEGIES else len(STRATEGIES))
    else:
        log("strategies: tutorial (one process)")
        out["tutorial"] = _rows(spawn({**common, "preset": "tutorial",
                                       "strategies": list(STRATEGIES), "repeats": reps,
                                       "warmup": warm}), "all")
        log("strategies: base (one process)")
        out["base"] = _rows(spawn({**common, "preset": "base", "strategies": list(STRATEGIES),
                                   "repeats": max(base_reps, 1), "warmup": base_warm,
                                   "step_batch": settings["base_batch"],
                                   "timed": list(settings["base_timed"])}), "all")
    return out


def _rows(result: Any, name: str) -> list[dict[str, Any]]:
    if isinstance(result, dict) and "error" in result:
        return [{"strategy": name, **result}]
    return list(result)


def section_notebooks(tmp: Path, run_series: bool) -> dict[str, Any]:
    """The quick series run now in fresh folders, and the durations papermill stored in the
    last executed series under reports/notebooks (full mode after ``make demo``)."""
    from duallora import paths
    from perf.measure import executed_notebook_times, measure_notebooks

    out: dict[str, Any] = {
        "demo": executed_notebook_times(paths.default_reports_dir() / "notebooks")}
    if run_series:
        try:
            out["quick_series"] = measure_notebooks(tmp / "nb-reports", tmp / "nb-data")
        except KitError as err:
            out["quick_series"] = {"error": str(err)}
    else:
        out["quick_series"] = {"skipped": "quick benchmark run or --skip notebooks"}
    return out


def section_flower(data: Path, tmp: Path, log: Any) -> dict[str, Any]:
    from perf.flower import measure_flower

    try:
        return measure_flower(data, tmp / "flower", log=log)
    except KitError as err:  # no usable Flower part in this checkout, or the run failed
        return {"available": False, "reason": str(err).splitlines()[0]}
    except Exception as err:  # a failing optional section must not lose the other results
        return {"available": False, "reason": f"failed: {type(err).__name__}: {err}"}


# -- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from duallora.base.command_line import OneLineParser

    parser = OneLineParser(prog="perf/run.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (~2 min)")
    parser.add_argument("--out", type=Path, default=REPO / "reports",
                        help="where benchmarks.json and benchmarks.md go (default reports/)")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench",
                        help="cache folder for the benchmark's phantom cohort (default data/bench)")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS,
                        help="leave a section out (repeatable)")
    parser.add_argument("--update-docs", "--update-readme", dest="update_docs",
                        action="store_true",
                        help="copy the table into docs/PERFORMANCE.md between the bench markers "
                        "(--update-readme: its old name; the README no longer holds timings)")
    parser.add_argument("--base-timed", metavar="NAMES",
                        help="comma-separated strategies whose CineMA base step is timed "
                        "(default: all in a full run, med_duallora in --quick)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads per worker (default: torch's own choice)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: rebuild the markdown (and, with "
                        "--update-docs, the docs/PERFORMANCE.md block) from a benchmarks.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from duallora.notebooks.experiments import workspace
    from perf import measure, report

    started = time.perf_counter()
    settings = plan(args.quick)
    if args.base_timed:
        unknown = sorted(set(args.base_timed.split(",")) - set(STRATEGIES))
        if unknown:
            raise KitError(f"--base-timed: unknown strategy {', '.join(unknown)}")
        settings["base_timed"] = tuple(args.base_timed.split(","))
    if args.threads:
        import torch

        THREADS["threads"] = args.threads
        torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    results: dict[str, Any] = {"environment": measure.environment(),
                               "settings": {"quick": args.quick, **settings,
                                            "cohort_scale": BENCH_SCALE[mode]}}

    partial = args.out / "benchmarks.partial.json"

    def log(text: str) -> None:
        """Progress line; also saves what is measured so far (a long run stopped halfway
        keeps its finished sections in benchmarks.partial.json)."""
        print(f"[bench {time.perf_counter() - started:6.0f} s] {text}", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(results, indent=2, default=str) + "\n")

    ws = workspace(args.data, quick=args.quick)
    with tempfile.TemporaryDirectory(prefix="duallora-bench-") as scratch:
        tmp = Path(scratch)
        cache = tmp / "prefix_cache"
        log("data: phantom cohort" + ("" if "data" in args.skip else
                                      " and harmonization throughput"))
        results["data"] = section_data(ws, BENCH_SCALE[mode], tmp, settings,
                                       "data" not in args.skip)
        if "strategies" not in args.skip:
            results["strategies"] = section_strategies(ws.harmonized, cache, settings, log)
            log("strategies: CineMA base prefix")
            results["base_prefix"] = spawn({"kind": "base_prefix",
                                            "n_subjects": settings["base_batch"]})
        if "prefix" not in args.skip:
            log("prefix cache: med_duallora round with and without")
            warm, reps = settings["round"]
            results["prefix_cache"] = spawn({"kind": "prefix", "data": str(ws.harmonized),
                                             "cache": str(cache), "repeats": reps,
                                             "warmup": warm})
        if "inference" not in args.skip:
            log("inference: plain, unmerged, merged")
            warm, reps = settings["inference"]
            results["inference"] = spawn({"kind": "inference", "repeats": reps, "warmup": warm,
                                          "batch": settings["inference_batch"]})
        run_series = "notebooks" not in args.skip and not args.quick
        log("notebooks: " + ("the quick series" if run_series else "reading timings"))
        results["notebooks"] = section_notebooks(tmp, run_series)
        if "flower" not in args.skip and not args.quick:
            log("flower: localhost vs in-process")
            results["flower"] = section_flower(ws.harmonized, tmp, log)
        elif "flower" not in args.skip:
            results["flower"] = {"available": False, "reason": "skipped in --quick"}
    results["targets"] = report.evaluate_targets(results)
    results["wall_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    partial.unlink(missing_ok=True)
    table = report.markdown(results)
    (args.out / "benchmarks.md").write_text("# Benchmarks\n\n" + table)
    if args.update_docs:
        report.update_readme(PERFORMANCE_DOC, table)
    print(f"[bench {results['wall_seconds']:6.0f} s] wrote {args.out / 'benchmarks.json'} "
          "and benchmarks.md", flush=True)
    for target in results["targets"]:
        print(f"  {target['target']}: {target['measured']}")
    return 0


def render(args: argparse.Namespace) -> int:
    """``--render JSON``: targets, markdown and the docs/PERFORMANCE.md block from stored
    results."""
    from perf import report

    try:
        results = json.loads(Path(args.render).read_text())
    except (OSError, ValueError) as err:
        raise KitError(f"{args.render}: cannot read benchmark results ({err})") from None
    results["targets"] = report.evaluate_targets(results)
    table = report.markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.md").write_text("# Benchmarks\n\n" + table)
    if args.update_docs:
        report.update_readme(PERFORMANCE_DOC, table)
    print(f"wrote {args.out / 'benchmarks.md'}" + (f" and {PERFORMANCE_DOC}" if args.update_docs
                                                     else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        os.environ.setdefault("MPLBACKEND", "Agg")
        result = worker(json.loads(args.worker))
        print(RESULT_MARK + json.dumps(result, default=str), flush=True)
        return 0
    try:
        return render(args) if args.render else run(args)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
