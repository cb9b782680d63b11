"""Read a run directory back: the one reader of what ``duallora.base.rundir`` writes.

Notebooks, the sweep, benchmarks, tuning, Flower comparisons and the command-line headline all
read runs through :func:`load_run` (or one of the per-file readers below), so the column lists
and what "missing" means live in one place; the file names are ``RunDir``'s
(``duallora.base.rundir``, beside the writer). This module only reads, and never writes.

Optional files read as empty: a run directory always has ``config.json`` and ``metrics.csv``
once training finished; ``predictions.csv``, ``comm.jsonl``, ``timing.json``, ``events.json``
and ``adapter_norms.csv`` may be absent (a baseline sends no messages, an older run kept no
timing, only notebook runs log adapter norms).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from duallora.base.rundir import METRIC_COLUMNS, PREDICTION_COLUMNS, RunDir
from duallora.errors import KitError

COMM_COLUMNS = ["round", "client", "direction", "keys", "bytes"]


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` as a plain dict (the ``TrainConfig`` fields, JSON types)."""
    return json.loads(RunDir(run_dir).config.read_text())


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """``metrics.csv``: ``round, client, split, metric, value``."""
    return pd.read_csv(RunDir(run_dir).metrics)


def read_predictions(run_dir: str | Path, *, missing_ok: bool = True) -> pd.DataFrame:
    """``predictions.csv`` (final models), or (``missing_ok``) an empty frame with its
    columns when the file is absent."""
    path = RunDir(run_dir).predictions
    if missing_ok and not path.is_file():
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    return pd.read_csv(path)


def read_comm(run_dir: str | Path) -> pd.DataFrame:
    """``comm.jsonl``, one row per message: ``round, client, direction, keys, bytes``."""
    path = RunDir(run_dir).comm
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    return pd.DataFrame(rows, columns=COMM_COLUMNS)


def read_timing(run_dir: str | Path) -> dict[str, Any]:
    """``timing.json`` (wall-clock seconds: ``total_seconds``, ``rounds``), or ``{}``."""
    path = RunDir(run_dir).timing
    return json.loads(path.read_text()) if path.is_file() else {}


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """``events.json`` (dropped / failed clients, skipped rounds), or ``[]``."""
    path = RunDir(run_dir).events
    return json.loads(path.read_text()) if path.is_file() else []


def read_norms(run_dir: str | Path) -> pd.DataFrame:
    """``adapter_norms.csv`` (written by ``federated.norm_logger``), or an empty frame."""
    path = RunDir(run_dir).norms
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


@dataclass
class RunResults:
    """The files of one finished run directory, read into frames and dicts."""

    name: str
    path: Path
    config: dict[str, Any]
    metrics: pd.DataFrame
    predictions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=PREDICTION_COLUMNS))
    comm: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COMM_COLUMNS))
    norms: pd.DataFrame = field(default_factory=pd.DataFrame)
    timing: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def final_metrics(self, split: str = "test") -> pd.DataFrame:
        """The metric rows of the last round (``config["rounds"]``) for ``split``."""
        m = self.metrics
        return m[(m["round"] == self.config["rounds"]) & (m["split"] == split)]

    def cost(self) -> pd.Series:
        """The ``cost`` rows (parameters, bytes) as ``metric -> value``."""
        return self.metrics[self.metrics["split"] == "cost"].set_index("metric")["value"]


def load_run(path: str | Path, name: str | None = None) -> RunResults:
    """Read every file of the run directory ``path``; ``name`` defaults to the folder's name.

    Raises ``KitError`` when ``metrics.csv`` is missing: the run did not finish (or ``path`` is
    not a run directory), and a half-read run would give silently wrong tables.
    """
    path = Path(path)
    if not RunDir(path).metrics.is_file():
        raise KitError(f"{path}: not a finished run directory (metrics.csv missing)")
    return RunResults(name=name or path.name, path=path, config=read_config(path),
                      metrics=read_metrics(path), predictions=read_predictions(path),
                      comm=read_comm(path), norms=read_norms(path), timing=read_timing(path),
                      events=read_events(path))


def load_runs(paths: Mapping[str, str | Path]) -> dict[str, RunResults]:
    """``{name: run folder}`` -> ``{name: RunResults}``, in the same order."""
    return {name: load_run(path, name) for name, path in paths.items()}


__all__ = ["COMM_COLUMNS", "METRIC_COLUMNS", "PREDICTION_COLUMNS", "RunResults", "load_run",
           "load_runs", "read_comm", "read_config", "read_events", "read_metrics", "read_norms",
           "read_predictions", "read_timing"]
