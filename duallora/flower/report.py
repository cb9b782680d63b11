"""Flower runs for the notebooks: build-or-reuse, compare with the in-process loop, tables, plots.

``ensure_flower_run`` mirrors ``duallora.experiments.ensure_run``: it reruns only when the
settings changed. The comparisons read two run directories (same format), nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from safetensors.torch import load_file

from duallora.federated.config import TrainConfig

FLOWER_MARKER = "flower_run.json"
HEADLINE = ("balanced_accuracy", "specificity", "sensitivity", "auc")


def ensure_flower_run(run_dir: Path, config: TrainConfig, n_clients: int, *,
                      dp_noise_multiplier: float = 0.0, dp_clipping_norm: float = 1.0,
                      timeout: float = 3600.0) -> Path:
    """``flower-local`` into ``run_dir`` unless a finished run with these settings is there."""
    from duallora.flower.local_run import run_local

    run_dir = Path(run_dir)
    wanted = {"config": json.loads(config.to_json()), "clients": n_clients,
              "dp_noise_multiplier": dp_noise_multiplier, "dp_clipping_norm": dp_clipping_norm}
    marker = run_dir / FLOWER_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted \
            and (run_dir / "predictions.csv").is_file():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_local(config, run_dir, n_clients, work_dir=run_dir / "flower" / "work",
              dp_noise_multiplier=dp_noise_multiplier, dp_clipping_norm=dp_clipping_norm,
              timeout=timeout)
    marker.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return run_dir


def compare_runs(flower_dir: Path, reference_dir: Path) -> pd.DataFrame:
    """How far a Flower run is from the in-process run: global adapter, metrics, predictions,
    communication log (0 and True mean identical)."""
    ours = load_file(str(Path(flower_dir) / "checkpoints" / "final" / "global.safetensors"))
    ref = load_file(str(Path(reference_dir) / "checkpoints" / "final" / "global.safetensors"))
    same_keys = sorted(ours) == sorted(ref)
    adapter_diff = max((float((ours[k].double() - ref[k].double()).abs().max()) for k in ref),
                       default=0.0) if same_keys else float("nan")
    m_ours = pd.read_csv(Path(flower_dir) / "metrics.csv")
    m_ref = pd.read_csv(Path(reference_dir) / "metrics.csv")
    same_rows = m_ours.drop(columns="value").equals(m_ref.drop(columns="value"))
    metric_diff = float((m_ours["value"] - m_ref["value"]).abs().max()) if same_rows \
        else float("nan")
    p_ours = pd.read_csv(Path(flower_dir) / "predictions.csv")
    p_ref = pd.read_csv(Path(reference_dir) / "predictions.csv")
    same_subjects = p_ours.drop(columns=["prob", "pred"]).equals(p_ref.drop(columns=["prob",
                                                                                     "pred"]))
    prob_diff = float((p_ours["prob"] - p_ref["prob"]).abs().max()) if same_subjects \
        else float("nan")
    comm_same = (Path(flower_dir) / "comm.jsonl").read_text() == \
        (Path(reference_dir) / "comm.jsonl").read_text()
    return pd.DataFrame([
        {"what": "global adapter + head (max |difference|)", "value": adapter_diff,
         "same_structure": same_keys},
        {"what": "metrics.csv values (max |difference|)", "value": metric_diff,
         "same_structure": same_rows},
        {"what": "test probabilities (max |difference|)", "value": prob_diff,
         "same_structure": same_subjects},
        {"what": "comm.jsonl (messages, keys, bytes)", "value": 0.0 if comm_same else 1.0,
         "same_structure": comm_same},
    ])


def round_times(runs: dict[str, Path]) -> pd.DataFrame:
    """Seconds per round (and final evaluation) from each run's ``timing.json``."""
    rows = []
    for label, path in runs.items():
        timing = json.loads((Path(path) / "timing.json").read_text())
        for round_idx, seconds in sorted(timing["rounds"].items(), key=lambda kv: int(kv[0])):
            rows.append({"run": label, "round": int(round_idx), "seconds": float(seconds)})
    return pd.DataFrame(rows, columns=["run", "round", "seconds"])


def test_metrics(runs: dict[str, Path], scope: str = "macro", split: str = "test"
                 ) -> pd.DataFrame:
    """Headline test metrics (``scope``: macro over vendors, or pooled) per run."""
    rows = []
    for label, path in runs.items():
        metrics = pd.read_csv(Path(path) / "metrics.csv")
        part = metrics[(metrics.split == split) & (metrics.client == scope)
                       & metrics.metric.isin(HEADLINE)]
        for _, row in part.iterrows():
            rows.append({"run": label, "metric": row["metric"], "value": float(row["value"])})
    return pd.DataFrame(rows, columns=["run", "metric", "value"])


def site_files(work_dir: Path) -> pd.DataFrame:
    """What each site kept on its own disk (node-local state), by file kind."""
    rows = []
    for site in sorted(p for p in (Path(work_dir) / "sites").iterdir() if p.is_dir()):
        for path in sorted((site / "state").rglob("*")):
            if path.is_file():
                rows.append({"site": site.name,
                             "file": str(path.relative_to(site / "state")),
                             "bytes": path.stat().st_size})
    return pd.DataFrame(rows, columns=["site", "file", "bytes"])


def plot_round_times(table: pd.DataFrame) -> plt.Figure:
    """Seconds per round, one bar group per round, one colour per run."""
    wide = table.pivot(index="round", columns="run", values="seconds")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    wide.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("seconds per round")
    ax.set_title("Round time: in-process loop vs Flower processes")
    fig.tight_layout()
    return fig


def plot_metric_bars(table: pd.DataFrame, title: str) -> plt.Figure:
    """One bar per run for each headline metric."""
    wide = table.pivot(index="metric", columns="run", values="value")
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    wide.plot.bar(ax=ax, rot=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test value (macro over vendors)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

