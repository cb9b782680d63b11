"""Issue 16's measurements: frame handling and the protocol change, on the demo cohort.

Declared before any result was seen (and not changed after):

* Cohort and model: the demo's full-mode phantom cohort (``duallora.notebooks.experiments``,
  generator v1, cohort seed 0, the same for every arm; the seeds below are training seeds),
  tutorial preset, committed phantom FM, every other setting at its default
  (8 rounds x 2 local epochs, lr 2e-3, blocks last2, site-val-ba selection).
* A. Frame handling: ``--frames repeat`` vs ``per-frame`` for ``centralized`` and
  ``fedavg_lora``, seeds 0, 1, 2. Endpoint: pooled test AUC (split ``test``, pooled over
  vendors). Reported: mean and sd over seeds per arm, the paired difference per seed, its mean,
  and a paired t-test over the 3 seeds (3 seeds resolve only large effects: the table says so).
* B. Protocol: Med-DualLoRA with today's protocol vs the fair one (``--private-optimizer
  persistent --selection pooled-val-loss``), seeds 0, 1, 2. Endpoint: the ratio of the mean
  (over sites) Frobenius norm of the local adapter's update ``s_l B_l A_l`` to the norm of the
  global adapter's ``s_g B_g A_g`` (summed over blocks and modules) in the last round's state,
  plus pooled test AUC. The issue measured ~2 for today's protocol.

    python tools/frames_protocol_study.py --data data --out reports/frames_protocol
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from duallora.federated.norm_logger import adapter_scales, state_norms
from duallora.notebooks import experiments
from duallora.results.metrics import binary_metrics
from duallora.results.run_reader import load_run

SEEDS = (0, 1, 2)
FRAME_ARMS = {"repeat": {"frames": "repeat"}, "per-frame": {"frames": "per-frame"}}
PROTOCOL_ARMS = {"today": {}, "fair": {"private_optimizer": "persistent",
                                       "selection": "pooled-val-loss"}}


def pooled_auc(run_dir: Path) -> float:
    predictions = load_run(run_dir).predictions
    test = predictions[predictions.split == "test"]
    return float(binary_metrics(test.label.to_numpy(), test.prob.to_numpy())["auc"])


def local_to_global_ratio(run_dir: Path) -> float:
    """Mean over sites of ||local update|| / ||global update|| in the last checkpoint."""
    state = torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=False)
    config = load_run(run_dir).config
    rows = pd.DataFrame(state_norms(state, adapter_scales(argparse.Namespace(**config)),
                                    state["round"]))
    total = rows.groupby(["owner", "adapter"])["norm"].apply(lambda v: math.sqrt((v ** 2).sum()))
    global_norm = float(total[("server", "global")])
    local = [float(v) for (owner, adapter), v in total.items() if adapter == "local"]
    return float(np.mean(local)) / global_norm


def paired_summary(values: dict[str, dict[int, float]], a: str, b: str) -> dict[str, float]:
    diffs = np.array([values[b][s] - values[a][s] for s in SEEDS])
    t = stats.ttest_1samp(diffs, 0.0)
    return {"mean_diff": float(diffs.mean()), "min_diff": float(diffs.min()),
            "max_diff": float(diffs.max()), "p_paired_t": float(t.pvalue),
            "wins": int((diffs > 0).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("reports/frames_protocol"))
    args = parser.parse_args()
    results: dict[str, dict] = {"frames": {}, "protocol": {}}
    ws = experiments.workspace(args.data, quick=False, seed=0)
    experiments.ensure_cohort(ws)
    for seed in SEEDS:
        for strategy in ("centralized", "fedavg_lora"):
            for arm, extra in FRAME_ARMS.items():
                run = experiments.ensure_run(ws, f"study_{strategy}_{arm}_s{seed}", strategy,
                                             progress=False, seed=seed, **extra)
                results["frames"].setdefault(f"{strategy}/{arm}", {})[seed] = pooled_auc(run)
        for arm, extra in PROTOCOL_ARMS.items():
            run = experiments.ensure_run(ws, f"study_med_duallora_{arm}_s{seed}",
                                         "med_duallora", progress=False, seed=seed, **extra)
            results["protocol"].setdefault(f"auc/{arm}", {})[seed] = pooled_auc(run)
            results["protocol"].setdefault(f"ratio/{arm}", {})[seed] = \
                local_to_global_ratio(run)
    summary = {
        "frames": {s: paired_summary(results["frames"], f"{s}/repeat", f"{s}/per-frame")
                   for s in ("centralized", "fedavg_lora")},
        "protocol_auc": paired_summary(results["protocol"], "auc/today", "auc/fair"),
        "protocol_ratio": paired_summary(results["protocol"], "ratio/today", "ratio/fair"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"seeds": SEEDS, "values": results, "summary": summary, "protocol": __doc__}
    (args.out / "frames_protocol.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = [{"measure": name, **{f"seed {s}": v[s] for s in SEEDS},
             "mean": float(np.mean([v[s] for s in SEEDS])),
             "sd": float(np.std([v[s] for s in SEEDS], ddof=1))}
            for group in results.values() for name, v in group.items()]
    table = pd.DataFrame(rows)
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join(v if isinstance(v, str) else f"{v:.3f}" for v in row)
                   + " |\n" for row in table.itertuples(index=False))
    (args.out / "frames_protocol.md").write_text(header + body + "\n```\n"
                                                 + json.dumps(summary, indent=2) + "\n```\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
