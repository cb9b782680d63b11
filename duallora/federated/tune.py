"""A small learning-rate grid per strategy, chosen on the pooled validation log loss.

Why: one learning rate for every strategy (the kit's 2e-3) favours some of them: full block
weights, LoRA factors and a head move at different speeds. Each strategy gets the same small
grid and the same pre-declared rule: train every grid value with the run's other settings,
take the final round's pooled validation log loss of the personalized models (the driver's
``server/val/pooled_log_loss`` metric; continuous, so it does not tie like balanced accuracy on a
few subjects), and choose the lowest (ties: the smaller learning rate). Test data are never read.

``tune-lr.json`` records the grid, every loss and the choice; ``duallora train --lr-from FILE``
trains with it and keeps the file's path in ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from duallora.base.config import CHOICE_FILE, TrainConfig, resume_conflicts
from duallora.errors import KitError
from duallora.results.run_reader import read_metrics

DEFAULT_GRID = (5e-4, 1e-3, 2e-3, 4e-3)
RULE = "lowest final-round pooled validation log loss (ties: smaller lr)"


def final_val_loss(run_dir: Path, rounds: int) -> float:
    """The pooled validation log loss of the personalized models after the last round."""
    metrics = read_metrics(run_dir)
    rows = metrics[(metrics.client == "server") & (metrics.split == "val")
                   & (metrics.metric == "pooled_log_loss") & (metrics["round"] == rounds)]
    return float(rows["value"].iloc[0]) if len(rows) else math.nan


def choose(losses: dict[float, float]) -> float:
    """The grid value with the lowest finite loss (ties: the smaller learning rate)."""
    finite = {lr: loss for lr, loss in losses.items() if not math.isnan(loss)}
    if not finite:
        raise KitError("every learning rate of the grid gave an undefined validation loss")
    return min(finite, key=lambda lr: (finite[lr], lr))


def tune_lr(config: TrainConfig, grid: tuple[float, ...], out_dir: Path, *,
            progress: bool = True) -> dict[str, Any]:
    """Train ``config`` once per grid value into ``out_dir/lr-<value>``; write the choice."""
    from duallora.federated.loop import run_training

    if not grid or any(lr <= 0 for lr in grid):
        raise KitError("--grid needs positive learning rates")
    out_dir = Path(out_dir)
    losses = {}
    for lr in sorted(set(grid)):
        wanted = dataclasses.replace(config, lr=lr)
        refuse_other_run(wanted, out_dir / f"lr-{lr:g}")
        run = run_training(wanted, out_dir / f"lr-{lr:g}", resume=True, progress=progress)
        losses[lr] = final_val_loss(run, config.rounds)
    chosen = choose(losses)
    record = {"strategy": config.strategy, "rule": RULE, "grid": sorted(losses),
              "val_loss": {f"{lr:g}": loss for lr, loss in losses.items()},
              "chosen_lr": chosen, "config": json.loads(config.to_json())}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CHOICE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def refuse_other_run(config: TrainConfig, folder: Path) -> None:
    """A grid run is resumed from its folder: refuse one recorded with other settings (it
    would silently stand in for this configuration's run), naming the settings."""
    from duallora.base.rundir import RunDir

    rundir = RunDir(folder)
    if not rundir.config.is_file():
        return
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "quick"]
    conflicts = resume_conflicts(rundir.read_config(), config, names)
    if conflicts:
        raise KitError(f"{rundir.root} holds a run with other settings: {'; '.join(conflicts)}"
                       ". Remove it, or tune into another --out")
