"""Choose the frame handling default by a rule written down before any run (issue 16).

Rule (fixed in this docstring before the runs were made):

- Cohort: the primary cell of the benchmark's `demo` plan (phantom v2, cohort seed 0), built
  by the benchmark itself; only its training cohort's validation subjects are scored.
- Runs: `centralized`, `fedavg_lora` and `med_duallora`, training seed 0, the benchmark's
  protocol (`duallora.benchmark.plans.PROTOCOL`), under `--frames repeat` and
  `--frames per-frame` (`trainable-stem` has no prefix cache: too costly for this budget; it
  stays an option).
- Score: each run's lowest pooled validation log loss over rounds (the selection criterion
  itself; metrics.csv `server,val,pooled_log_loss`), averaged over the three strategies.
- Choice: the mode with the lower mean score, unless the two differ by less than 0.01 nats;
  then `repeat` stays (CineMA's own input, which the paper most likely used with its frozen
  stem). Test subjects are never read.

    python tools/choose_frames.py --data data/benchmark --out docs/frames_rule.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from duallora.benchmark.cohorts import ensure_cohort
from duallora.benchmark.plans import RUNS, get_plan
from duallora.benchmark.runs import run_config
from duallora.federated.reuse import ensure_trained

MODES = ("repeat", "per-frame")
STRATEGIES = ("centralized", "fedavg_lora", "med_duallora")
TIE = 0.01


def best_val_loss(folder: Path) -> float:
    metrics = pd.read_csv(folder / "metrics.csv")
    rows = metrics[(metrics["client"] == "server") & (metrics["split"] == "val")
                   & (metrics["metric"] == "pooled_log_loss")]
    return float(rows["value"].min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plan", default="demo")
    args = parser.parse_args()
    plan = get_plan(args.plan)
    cohort = ensure_cohort(args.data, plan, plan.primary_cell, plan.cohort_seeds[0])
    scores: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
    for mode in MODES:
        for strategy in STRATEGIES:
            spec = RUNS[strategy]
            config = run_config(plan, cohort, spec, 0, args.data / "prefix_cache")
            config = type(config).from_dict({**json.loads(config.to_json()), "frames": mode})
            folder = cohort.root / "frames_rule" / f"{strategy}_{mode}"
            ensure_trained(config, folder, progress=False)
            scores[mode][strategy] = best_val_loss(folder)
            print(f"{mode:>10} {strategy:<14} best pooled val log loss "
                  f"{scores[mode][strategy]:.4f}", flush=True)
    means = {mode: sum(values.values()) / len(values) for mode, values in scores.items()}
    gap = means["repeat"] - means["per-frame"]
    choice = "per-frame" if gap >= TIE else "repeat"  # a tie or a worse per-frame: repeat
    result = {"rule": __doc__.split("Rule (", 1)[1].split("    python", 1)[0].strip(),
              "cohort": cohort.cell.spec, "scores": scores, "means": means,
              "repeat_minus_per_frame": gap, "choice": choice}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"choice: {choice} (repeat - per-frame = {gap:+.4f} nats)")


if __name__ == "__main__":
    main()
