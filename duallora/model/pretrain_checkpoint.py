"""Resumable MAE pretraining: the training state saved between chunks.

Why: a large population takes longer to pretrain on than one sitting (a GPU lease, a shared
CPU), so a run is cut into chunks (``--stop-after-minutes``) and continued (``--resume``). The
checkpoint holds everything the next step depends on (model and head weights, AdamW moments,
the GradScaler, the seeded CPU generator that shuffles, shifts and masks, the epoch's order and
position in it, the loss log), so on the CPU a run cut into any number of chunks ends with
byte-identical weights and log to an uninterrupted one. Files are replaced atomically: a run
killed while saving keeps the previous checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from duallora.errors import KitError

CHECKPOINT_FORMAT = "duallora-mae-pretrain-checkpoint/1"

# config field -> the ``duallora pretrain`` option that sets it (for refusal messages)
OPTIONS = {"size": "--size", "epochs": "--epochs", "seed": "--seed",
           "batch_size": "--batch-size", "lr": "--lr", "warmup_epochs": "--warmup-epochs",
           "mask_ratio": "--mask-ratio", "mask_slab": "--mask-slab",
           "norm_target": "--norm-target", "anatomy_weight": "--anatomy-weight",
           "precision": "--precision", "data": "the data source (--data, --population or "
           "--frames-population)"}


@dataclass
class TrainState:
    """Where a pretraining run stands after a step (or before the first one)."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # samples of the epoch's order already used
    order: torch.Tensor | None = None  # this epoch's shuffle; None before it is drawn
    log: list[dict] = field(default_factory=list)
    chunks: int = 1  # runs that have trained on this state, this one included
    wall_time_s: float = 0.0  # training time of the earlier chunks


def settings(config: dict[str, Any], precision: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the run that saved the checkpoint."""
    return {**config, "precision": precision, "data": data}


def save_checkpoint(path: Path, run_settings: dict[str, Any], state: TrainState,
                    modules: dict[str, Any], generator: torch.Generator) -> None:
    """Write the checkpoint atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "settings": run_settings,
               "state": {"step": state.step, "epoch": state.epoch, "position": state.position,
                         "order": state.order, "log": state.log, "chunks": state.chunks,
                         "wall_time_s": state.wall_time_s},
               "generator": generator.get_state(),
               "modules": {name: m.state_dict() for name, m in modules.items() if m is not None}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The saved payload; a ``KitError`` names the file when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"--checkpoint {path}: not found; nothing to --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise KitError(f"--checkpoint {path}: unreadable ({type(err).__name__})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise KitError(f"--checkpoint {path}: not a pretraining checkpoint of this kit")
    return payload


def check_settings(path: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to resume under other settings, naming every differing option."""
    differing = [OPTIONS.get(key, key) for key in sorted(set(saved) | set(wanted))
                 if saved.get(key) != wanted.get(key)]
    if differing:
        raise KitError(f"--resume {path}: the checkpoint was made with other settings "
                       f"({'; '.join(differing)}); use the original command or a new "
                       "--checkpoint")


def restore(payload: dict[str, Any], modules: dict[str, Any],
            generator: torch.Generator) -> TrainState:
    """Load weights, optimizer and generator state; returns the state to continue from."""
    for name, module in modules.items():
        if module is not None and name in payload["modules"]:
            module.load_state_dict(payload["modules"][name])
    generator.set_state(payload["generator"])
    saved = payload["state"]
    return TrainState(step=saved["step"], epoch=saved["epoch"], position=saved["position"],
                      order=saved["order"], log=list(saved["log"]),
                      chunks=saved["chunks"] + 1, wall_time_s=saved["wall_time_s"])
