"""A harmonized cohort split into federated clients (one per vendor) and their data splits.

Each client holds its ``train``/``val``/``test`` tensors in memory. ``inputs`` is either
``{"x": images}`` or, when the prefix cache is used, the frozen model's prefix state (every
tensor batch-first), with ``from_block`` telling the model where to resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from duallora.errors import KitError

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("subject_id", "vendor", "label", "split")


@dataclass
class SplitData:
    """One split of one client: model inputs, labels and subject ids, row-aligned."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    subject_ids: list[str]

    def __len__(self) -> int:
        return len(self.subject_ids)

    def take(self, index: torch.Tensor | np.ndarray | list[int]) -> SplitData:
        index = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return SplitData({k: v[index] for k, v in self.inputs.items()}, self.labels[index],
                         [self.subject_ids[int(i)] for i in index])

    @staticmethod
    def concat(parts: list[SplitData]) -> SplitData:
        keys = parts[0].inputs.keys()
        return SplitData({k: torch.cat([p.inputs[k] for p in parts]) for k in keys},
                         torch.cat([p.labels for p in parts]),
                         [sid for p in parts for sid in p.subject_ids])


@dataclass
class ClientData:
    """A federated client (a vendor, or ``pooled`` for centralized training)."""

    name: str
    splits: dict[str, SplitData]
    from_block: int | None = None
    vendors: list[str] = field(default_factory=list)
    # Standardization of the head inputs this client uses ({"mean", "std"}; None = identity),
    # set once per run by ``head_norm.setup_head_norm``.
    head_norm: dict[str, torch.Tensor] | None = None

    def n_train(self) -> int:
        return len(self.splits["train"])


def check_metadata(frame: pd.DataFrame, source: str) -> None:
    """One clear line when the metadata lacks what training needs."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise KitError(f"{source}: metadata.csv lacks column(s) {', '.join(missing)}")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise KitError(f"{source}: unknown split value(s) {bad} (expected train/val/test)")


def split_clients(images: torch.Tensor, frame: pd.DataFrame) -> dict[str, ClientData]:
    """Group rows by vendor and split (row ``i`` of ``frame`` is ``images[i]``)."""
    frame = frame.reset_index(drop=True)
    labels = torch.tensor(frame["label"].to_numpy(dtype=np.int64))
    clients: dict[str, ClientData] = {}
    for vendor in sorted(frame["vendor"].unique()):
        splits = {}
        for split in SPLITS:
            rows = np.flatnonzero(((frame["vendor"] == vendor) & (frame["split"] == split))
                                  .to_numpy())
            splits[split] = SplitData({"x": images[rows]}, labels[rows],
                                      frame.loc[rows, "subject_id"].astype(str).tolist())
        clients[vendor] = ClientData(vendor, splits, None, [vendor])
    return clients


def trim_train(client: ClientData, limit: int) -> None:
    """Keep at most ``limit`` training subjects, alternating labels so both classes stay."""
    train = client.splits["train"]
    if limit <= 0 or len(train) <= limit:
        return
    by_label = [np.flatnonzero(train.labels.numpy() == lab).tolist() for lab in (0, 1)]
    order: list[int] = []
    while len(order) < limit and any(by_label):
        for rows in by_label:
            if rows and len(order) < limit:
                order.append(rows.pop(0))
    client.splits["train"] = train.take(sorted(order))


def pooled_client(clients: dict[str, ClientData]) -> ClientData:
    """Every client's data in one place (the centralized reference)."""
    parts = list(clients.values())
    splits = {s: SplitData.concat([c.splits[s] for c in parts]) for s in SPLITS}
    return ClientData("pooled", splits, parts[0].from_block, [c.name for c in parts])


def usable_for_training(client: ClientData) -> str | None:
    """Why a client cannot train (None when it can): it needs training subjects."""
    if client.n_train() == 0:
        return "no training subjects"
    return None
