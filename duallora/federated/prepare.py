"""From a harmonized folder to the clients of one run (the same for in-process and Flower).

Loads every subject once, splits by vendor, sets the held-out vendor aside, trims training sets
in quick mode, and, when the trained weights all sit after a frozen prefix and augmentation is
off, replaces images by cached prefix states (see ``prefix_cache``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from duallora import paths
from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.federated.client_model import ClientModel, model_input_size
from duallora.federated.cohort import (
    ClientData,
    SplitData,
    check_metadata,
    pooled_client,
    split_clients,
    trim_train,
)
from duallora.federated.prefix_cache import prefix_states


@dataclass
class FederatedCohort:
    """``train_clients`` take part in training; ``vendors`` are evaluated (one per vendor)."""

    train_clients: dict[str, ClientData]
    vendors: dict[str, ClientData]
    holdout: ClientData | None


UNSEEN_SITE = "unseen"  # the evaluation-only site of a test cohort's unseen centre


def _load_harmonized(root: Path, config: TrainConfig, option: str = "--data"
                     ) -> tuple[torch.Tensor, pd.DataFrame]:
    from duallora.data import load_cohort_arrays

    if not (root / "metadata.csv").is_file():
        raise KitError(f"{option} {root}: not a harmonized cohort (no metadata.csv); run "
                       "`python -m data_prep harmonize` first")
    image_size, crop_size = model_input_size(config)
    images, frame = load_cohort_arrays(root, image_size=image_size, crop_size=crop_size)
    check_metadata(frame, str(root / "metadata.csv"))
    if len(frame) == 0:
        raise KitError(f"{root / 'metadata.csv'}: no subjects")
    return torch.as_tensor(images, dtype=torch.float32), frame


def load_vendor_clients(config: TrainConfig) -> dict[str, ClientData]:
    """Every vendor of ``config.data`` as a ``ClientData`` holding images (with
    ``config.test_data``: the test splits replaced, see ``with_test_cohort``)."""
    images, frame = _load_harmonized(Path(config.data), config)
    if config.test_data:
        frame = frame.assign(split=frame["split"].replace({"test": "val"}))
    vendors = split_clients(images, frame)
    if config.test_data:
        vendors = with_test_cohort(vendors, *_load_harmonized(Path(config.test_data), config,
                                                             "--test-data"))
        if config.holdout_vendor:
            hold_out_of_training(vendors, config.holdout_vendor)
    return vendors


def hold_out_of_training(vendors: dict[str, ClientData], vendor: str) -> None:
    """With a test cohort, ``--holdout-vendor``: the vendor's training-cohort subjects are
    dropped (it never trains nor validates) and it stays a test-only vendor, so the global model
    is scored on its test-cohort subjects (predictions.csv split ``test_global``) beside the
    unseen centre (the evaluation-only site ``UNSEEN_SITE``)."""
    if vendor not in vendors or vendor == UNSEEN_SITE:
        raise KitError(f"--holdout-vendor {vendor}: the cohort has "
                       f"{', '.join(v for v in vendors if v != UNSEEN_SITE)}")
    held = vendors[vendor]
    nobody = torch.zeros(0, dtype=torch.long)
    for split in ("train", "val"):
        held.splits[split] = held.splits[split].take(nobody)


def with_test_cohort(vendors: dict[str, ClientData], images: torch.Tensor,
                     frame: pd.DataFrame) -> dict[str, ClientData]:
    """Every vendor's test split taken from a separate test cohort; its unseen-centre rows
    (column ``unseen_centre`` = 1) become the evaluation-only site ``UNSEEN_SITE``.

    Why: a v2 phantom cohort writes a balanced test cohort beside the training cohort (powered
    for differences of a few points of balanced accuracy); the training cohort's own small
    test split then joins validation instead of being dropped.
    """
    unseen = (frame["unseen_centre"].fillna(0).astype(int) == 1
              if "unseen_centre" in frame.columns else pd.Series(False, index=frame.index))
    seen_rows = np.flatnonzero(~unseen.to_numpy())
    tests = split_clients(images[torch.as_tensor(seen_rows)],
                          frame.iloc[seen_rows].assign(split="test"))
    missing = sorted(set(vendors) - set(tests))
    if missing:
        raise KitError(f"--test-data: no test subjects for vendor(s) {', '.join(missing)}")
    for name, client in vendors.items():
        client.splits["test"] = tests[name].splits["test"]
    if unseen.any():
        rows = np.flatnonzero(unseen.to_numpy())
        held = split_clients(images[torch.as_tensor(rows)],
                             frame.iloc[rows].assign(vendor=UNSEEN_SITE, split="test"))
        vendors[UNSEEN_SITE] = held[UNSEEN_SITE]
    return vendors


def use_prefix_cache(config: TrainConfig, model: ClientModel) -> int | None:
    """Block index to cache up to, or None when the full forward is needed."""
    if not config.prefix_cache or config.augment:
        return None
    upto = model.frozen_prefix_end()
    trained = {name.removeprefix("base_model.model.") for name in model.trainable_names}
    if upto == 0 or trained & set(model.core.prefix_parameter_names(upto)):
        return None
    return upto


def cache_folder(config: TrainConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else paths.default_data_dir() / "prefix_cache"


def to_prefix_states(client: ClientData, model: ClientModel, upto: int, config: TrainConfig
                     ) -> ClientData:
    """The same client with every split's images replaced by cached prefix states."""
    splits = {}
    for name, split in client.splits.items():
        states = prefix_states(model.core, split.inputs["x"], upto, config.eval_batch_size,
                               cache_folder(config), model.device, model.precision)
        splits[name] = SplitData(states, split.labels, split.subject_ids)
    return ClientData(client.name, splits, upto, client.vendors)


def set_holdout_aside(config: TrainConfig, vendors: dict[str, ClientData]) -> ClientData | None:
    """Take the evaluation-only site out of ``vendors``: a test cohort's unseen centre
    (``UNSEEN_SITE``, its test split), or ``config.holdout_vendor`` (every one of its subjects
    becomes its ``test`` split). It never trains; only the global model sees it."""
    if UNSEEN_SITE in vendors:  # a test cohort's unseen centre: evaluated, never trained
        held = vendors.pop(UNSEEN_SITE)
        return ClientData(held.name, {"test": held.splits["test"]}, None, [held.name])
    if not config.holdout_vendor or config.test_data:  # test cohort: hold_out_of_training
        return None
    if config.holdout_vendor not in vendors:
        raise KitError(f"--holdout-vendor {config.holdout_vendor}: the cohort has "
                       f"{', '.join(vendors)}")
    held = vendors.pop(config.holdout_vendor)
    everything = SplitData.concat([held.splits[s] for s in ("train", "val", "test")])
    return ClientData(held.name, {"test": everything}, None, [held.name])


def prepare_cohort(config: TrainConfig, model: ClientModel, *, evaluation_only: bool = False,
                   loaded: dict[str, ClientData] | None = None) -> FederatedCohort:
    """Clients for ``config.strategy`` (``pooled`` for centralized) plus per-vendor test sets.

    ``evaluation_only``: the folder may hold nothing but the held-out vendor (a Flower site
    that only evaluates the global model); otherwise some vendor must have training subjects.
    ``loaded``: the vendors already in memory (``load_vendor_clients``; a benchmark runs many
    strategies on one cohort), used as they are, never changed.
    """
    if evaluation_only and config.test_data and config.holdout_vendor:
        raise KitError("--holdout-vendor with --test-data is in-process only (duallora train, "
                       "the benchmark): over Flower the held-out site has no test cohort role")
    vendors = (load_vendor_clients(config) if loaded is None else
               {name: ClientData(c.name, dict(c.splits), c.from_block, list(c.vendors))
                for name, c in loaded.items()})
    if loaded is not None and config.test_data and config.holdout_vendor:
        hold_out_of_training(vendors, config.holdout_vendor)  # on the copies
    holdout = set_holdout_aside(config, vendors)
    for client in vendors.values():
        trim_train(client, config.max_train_per_client)
    empty = [name for name, client in vendors.items() if client.n_train() == 0]
    if len(empty) == len(vendors) and not (evaluation_only and holdout is not None):
        raise KitError(f"{config.data}: no vendor has training subjects")
    upto = use_prefix_cache(config, model)
    if upto is not None:
        vendors = {name: to_prefix_states(c, model, upto, config) for name, c in vendors.items()}
        if holdout is not None:
            holdout = to_prefix_states(holdout, model, upto, config)
    if model.strategy.pooled:
        train_clients = {"pooled": pooled_client(vendors)}
    else:
        train_clients = {name: c for name, c in vendors.items() if c.n_train() > 0}
    return FederatedCohort(train_clients, vendors, holdout)
