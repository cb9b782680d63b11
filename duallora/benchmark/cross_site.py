"""The cross-site matrix: every site's personalized model (and the global model) scored on
every vendor's test subjects, with the column sizes that bound its sampling error."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from duallora.benchmark.plans import ShiftCell
from duallora.benchmark.runs import TrainedRun
from duallora.results import run_reader


def cross_site_matrix(runs: list[TrainedRun], cell: ShiftCell) -> dict[str, Any]:
    """Balanced accuracy of each site's personalized model (rows; plus the global model) on
    every vendor's test subjects and the unseen centre (columns), mean over replicates."""
    from duallora.results.metrics import binary_metrics

    out: dict[str, Any] = {}
    for run in runs:
        if run.cohort.cell != cell or run.spec.holdout:
            continue
        predictions = run_reader.read_predictions(run.folder, missing_ok=False)
        table = out.setdefault(run.spec.name, defaultdict(lambda: defaultdict(list)))
        for (split, client), part in predictions.groupby(["split", "client"]):
            if split == "test":
                owner = client
            elif split.startswith("cross_site:"):
                owner = split.split(":", 1)[1]
            elif split in ("test_global", "holdout"):
                owner = "global"
            else:
                continue
            value = binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())
            table[owner][client].append(value["balanced_accuracy"])
    return {run: {owner: {target: float(np.mean(v)) for target, v in targets.items()}
                  for owner, targets in table.items()}
            for run, table in out.items()}


def subjects_per_site(runs: list[TrainedRun], cell: ShiftCell) -> dict[str, int]:
    """Test subjects of each vendor and of the unseen centre at ``cell`` (the cross-site
    matrix's column sizes, which bound its sampling error)."""
    for run in runs:
        if run.cohort.cell == cell and not run.spec.holdout:
            frame = run_reader.read_predictions(run.folder, missing_ok=False)
            part = frame[frame["split"].isin(["test", "holdout", "test_global"])]
            return {str(k): int(v) for k, v in
                    part.drop_duplicates(["client", "subject_id"]).groupby("client").size()
                    .items()}
    return {}
