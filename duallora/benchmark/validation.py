"""Validation predictions of a finished run's selected models (``validation_predictions.csv``).

``predictions.csv`` holds the final models' test predictions only. The thresholds at 90%
specificity (``duallora.results.thresholds``) are fixed on validation, so the benchmark scores
the run's exported models (``checkpoints/final``: each site's selected model, fine-tuned where
the strategy fine-tunes, and the selected global model) on every vendor's validation split with
the code of ``duallora evaluate``, and writes them beside the run, once:

    RUN_DIR/validation_predictions.csv   subject_id, client, split, label, prob, pred
                                         split ``val`` (each site's personalized model on its
                                         own validation subjects) or ``val_global`` (global)

A separate file, so every existing reader of the run directory is unchanged and runs finished
before it existed get it on their next benchmark call.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

VALIDATION_FILE = "validation_predictions.csv"
COLUMNS = ["subject_id", "client", "split", "label", "prob", "pred"]


def ensure_validation_predictions(folder: Path) -> Path:
    """``folder/validation_predictions.csv``, written from the exported models if missing."""
    from duallora.federated.evaluate import evaluate_export, read_export

    folder = Path(folder)
    path = folder / VALIDATION_FILE
    if path.is_file():
        return path
    export = read_export(folder)
    rows, _ = evaluate_export(export, Path(export.config.data), {}, split="val")
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(partial, index=False)
    partial.replace(path)
    return path


def read_validation(folder: Path) -> pd.DataFrame | None:
    path = Path(folder) / VALIDATION_FILE
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    frame["subject_id"] = frame["subject_id"].astype(str)
    return frame
