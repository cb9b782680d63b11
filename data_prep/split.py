"""The federated split: seeded, per vendor, stratified by label.

The official splits leave Canon without training subjects, so every vendor (= client) gets its
own train / val / test split, with healthy and diseased subjects spread proportionally. Each
(vendor, label) group is shuffled with its own generator derived from the seed, so adding a
subject to one vendor never reshuffles another.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _group_seed(seed: int, vendor: str, label: int) -> int:
    return zlib.crc32(f"{seed}/{vendor}/{label}".encode())


def split_sizes(n: int) -> tuple[int, int, int]:
    """(train, val, test) sizes; with three or more subjects every split gets at least one."""
    if n < 3:
        return n, 0, 0
    n_val = max(1, int(round(n * FRACTIONS["val"])))
    n_test = max(1, int(round(n * FRACTIONS["test"])))
    return n - n_val - n_test, n_val, n_test


def federated_split(frame: pd.DataFrame, seed: int) -> pd.Series:
    """``train|val|test`` for every row of ``frame`` (needs ``subject_id, vendor, label``)."""
    split = pd.Series("train", index=frame.index, dtype=object)
    for (vendor, label), group in frame.groupby(["vendor", "label"], sort=True):
        ids = group.sort_values("subject_id").index.to_numpy()
        order = np.random.default_rng(_group_seed(seed, str(vendor), int(label))).permutation(ids)
        n_train, n_val, _ = split_sizes(len(order))
        split.loc[order[n_train:n_train + n_val]] = "val"
        split.loc[order[n_train + n_val:]] = "test"
    return split
