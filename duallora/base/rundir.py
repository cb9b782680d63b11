"""The run directory of docs/CONTRACTS.md: its file names, and its writer (atomic files).

This module owns the names of a run directory's files (declared once, below); everything that
reads one goes through ``duallora.results.run_reader`` or ``RunDir``'s paths. Files are written
atomically so a crash never leaves half a file.

    RUN_DIR/config.json        the TrainConfig
    RUN_DIR/metrics.csv        round, client, split, metric, value
    RUN_DIR/predictions.csv    subject_id, client, split, label, prob, pred (final models)
    RUN_DIR/comm.jsonl         one message per line: round, client, direction, keys, bytes
    RUN_DIR/checkpoints/       last.pt (everything needed to continue) and final/ (adapters)
    RUN_DIR/timing.json        wall-clock seconds (kept apart: it is the only non-deterministic
                               output, so the files above are bit-identical across reruns)
    RUN_DIR/events.json        dropped / failed clients, skipped rounds, absent sites
    RUN_DIR/adapter_norms.csv  LoRA update norms per round (runs trained through ``reuse``)
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from duallora.base.config import TrainConfig
from duallora.errors import KitError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
PREDICTIONS_FILE = "predictions.csv"
COMM_FILE = "comm.jsonl"
TIMING_FILE = "timing.json"
EVENTS_FILE = "events.json"
NORMS_FILE = "adapter_norms.csv"
CHECKPOINTS_DIR, LAST_CHECKPOINT, FINAL_DIR = "checkpoints", "last.pt", "final"

METRIC_COLUMNS = ["round", "client", "split", "metric", "value"]
PREDICTION_COLUMNS = ["subject_id", "client", "split", "label", "prob", "pred"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush to disk, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class RunDir:
    """Paths and atomic writers of one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.config = self.root / CONFIG_FILE
        self.metrics = self.root / METRICS_FILE
        self.predictions = self.root / PREDICTIONS_FILE
        self.comm = self.root / COMM_FILE
        self.checkpoints = self.root / CHECKPOINTS_DIR
        self.last_checkpoint = self.checkpoints / LAST_CHECKPOINT
        self.final = self.checkpoints / FINAL_DIR
        self.timing = self.root / TIMING_FILE
        self.events = self.root / EVENTS_FILE
        self.norms = self.root / NORMS_FILE

    def holds_a_run(self) -> bool:
        return self.config.is_file() or self.last_checkpoint.is_file()

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Refuse to mix two runs in one folder unless asked to resume or overwrite.

        Only checks: nothing is created or removed here. ``begin`` does that once the new
        run's configuration, data and model have been built, so an ``--overwrite`` whose new
        run cannot even start (a bad option, a broken cohort) leaves the old run whole.
        """
        if self.root.exists() and not self.root.is_dir():
            raise KitError(f"--out {self.root}: exists and is not a folder")
        if self.holds_a_run() and not (resume or overwrite):
            raise KitError(f"--out {self.root} already holds a run; pass --resume to continue "
                           "it or --overwrite to start again")

    def begin(self, *, clear: bool) -> None:
        """Make the folder; ``clear``: first remove the previous run's files (``--overwrite``,
        called only after the new run was built successfully)."""
        if clear:
            for path in (self.config, self.metrics, self.predictions, self.comm,
                         self.last_checkpoint, self.timing):
                path.unlink(missing_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: TrainConfig) -> None:
        atomic_write_text(self.config, config.to_json() + "\n")

    def read_config(self) -> TrainConfig:
        return TrainConfig.load(self.config)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        frame = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        atomic_write_text(self.metrics, frame.to_csv(index=False, float_format="%.10g"))

    def write_predictions(self, rows: list[dict[str, Any]]) -> None:
        frame = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
        atomic_write_text(self.predictions, frame.to_csv(index=False, float_format="%.10g"))

    def write_comm(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        atomic_write_text(self.comm, text)

    def write_json(self, path: Path, value: Any) -> None:
        atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.last_checkpoint, buffer.getvalue())

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.last_checkpoint.is_file():
            return None
        try:
            return torch.load(self.last_checkpoint, map_location="cpu", weights_only=False)
        except Exception as err:  # a damaged file is the user's to delete, with a clear message
            raise KitError(f"{self.last_checkpoint}: cannot read the checkpoint ({err})") from err
