"""Read a frames population (``python -m data_prep population``) for MAE pretraining.

The folder holds every cine frame of many subjects already as model input (uint8, the preset's
``image_size``), in shards ``shard_NNNNN.npz`` listed by ``index.csv`` and described by
``population.json``. Everything stays uint8 here: a large population is several GB as uint8 and
four times that as float, so the training loop converts one batch at a time.

This module only reads the format (the model side does not import ``data_prep``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from duallora.errors import KitError

OPTION = "--frames-population"


@dataclass(frozen=True)
class FramesPopulation:
    """Every frame of a population, as stored."""

    frames: torch.Tensor  # uint8 (N, 1, H, W, D): model input x 255
    areas: torch.Tensor  # int16 (N, 3, D): LV, MYO, RV voxels per slice
    info: dict[str, Any]  # population.json

    def summary(self) -> dict[str, Any]:
        """What the pretraining record keeps about the population."""
        keep = ("generator", "seed", "n_subjects", "n_centre_sets", "rule", "shifts",
                "image_size", "crop_size", "sizes")
        return {key: self.info[key] for key in keep if key in self.info}


def _read_info(root: Path) -> dict[str, Any]:
    path = root / "population.json"
    if not path.is_file():
        raise KitError(f"{OPTION} {root}: population.json not found (write one with "
                       "`python -m data_prep population`)")
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise KitError(f"{path}: unreadable ({err})") from err
    if not info.get("complete"):
        raise KitError(f"{path}: the population is incomplete; rerun the same "
                       "`python -m data_prep population` command to finish it")
    return info


def load_frames_population(root: str | Path, image_size: tuple[int, int, int],
                           progress: bool = False) -> FramesPopulation:
    """Every frame listed in ``root/index.csv``, in index order, checked against the preset."""
    root = Path(root)
    info = _read_info(root)
    stored = tuple(int(s) for s in info.get("image_size", ()))
    if stored != tuple(image_size):
        raise KitError(f"{OPTION} {root}: frames are {stored}, but --size needs {image_size}; "
                       "write the population for this preset")
    try:
        index = pd.read_csv(root / "index.csv")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise KitError(f"{root / 'index.csv'}: unreadable ({err})") from err
    total = int(index["n_frames"].sum())
    if total == 0:
        raise KitError(f"{OPTION} {root}: holds no frames")
    frames = torch.empty((total, 1, *stored), dtype=torch.uint8)
    areas = torch.empty((total, 3, stored[2]), dtype=torch.int16)
    row = 0
    shards = sorted(index["shard"].unique())
    for shard in tqdm(shards, desc="load population", unit="shard", disable=not progress):
        path = root / f"shard_{int(shard):05d}.npz"
        try:
            with np.load(path) as data:
                shard_frames, shard_areas = data["frames"], data["areas"]
        except (OSError, KeyError, ValueError) as err:
            raise KitError(f"{path}: unreadable shard ({err})") from err
        for _, subject in index[index["shard"] == shard].iterrows():
            first, n = int(subject["first_row"]), int(subject["n_frames"])
            if first + n > len(shard_frames):
                raise KitError(f"{path}: lacks frames of {subject['subject_id']} listed in "
                               "index.csv")
            frames[row:row + n, 0] = torch.from_numpy(shard_frames[first:first + n])
            areas[row:row + n] = torch.from_numpy(shard_areas[first:first + n])
            row += n
    return FramesPopulation(frames, areas, info)
