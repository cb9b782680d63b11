"""From a harmonized folder to the clients of one run (the same for in-process and Flower).

Loads every subject once, splits by vendor, sets the held-out vendor aside, trims training sets
in quick mode, and, when the trained weights all sit after a frozen prefix and augmentation is
off, replaces images by cached prefix states (see ``prefix_cache``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from duallora import paths
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
from duallora.federated.config import TrainConfig
from duallora.federated.prefix_cache import prefix_states


@dataclass
class FederatedCohort:
    """``train_clients`` take part in training; ``vendors`` are evaluated (one per vendor)."""

    train_clients: dict[str, ClientData]
    vendors: dict[str, ClientData]
    holdout: ClientData | None


def load_vendor_clients(config: TrainConfig) -> dict[str, ClientData]:
    """Every vendor of ``config.data`` as a ``ClientData`` holding images."""
    from duallora.data import load_cohort_arrays

    root = Path(config.data)
    if not (root / "metadata.csv").is_file():
        raise KitError(f"{root}: not a harmonized cohort (no metadata.csv); run "
                       "`python -m data_prep harmonize` first")
    image_size, crop_size = model_input_size(config)
    images, frame = load_cohort_arrays(root, image_size=image_size, crop_size=crop_size)
    check_metadata(frame, str(root / "metadata.csv"))
    if len(frame) == 0:
        raise KitError(f"{root / 'metadata.csv'}: no subjects")
    return split_clients(torch.as_tensor(images, dtype=torch.float32), frame)


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
                               cache_folder(config))
        splits[name] = SplitData(states, split.labels, split.subject_ids)
    return ClientData(client.name, splits, upto, client.vendors)


def prepare_cohort(config: TrainConfig, model: ClientModel, *, evaluation_only: bool = False
                   ) -> FederatedCohort:
    """Clients for ``config.strategy`` (``pooled`` for centralized) plus per-vendor test sets.

    ``evaluation_only``: the folder may hold nothing but the held-out vendor (a Flower site
    that only evaluates the global model); otherwise some vendor must have training subjects.
    """
    vendors = load_vendor_clients(config)
    holdout = None
    if config.holdout_vendor:
        if config.holdout_vendor not in vendors:
            raise KitError(f"--holdout-vendor {config.holdout_vendor}: the cohort has "
                           f"{', '.join(vendors)}")
        held = vendors.pop(config.holdout_vendor)
        everything = SplitData.concat([held.splits[s] for s in ("train", "val", "test")])
        holdout = ClientData(held.name, {"test": everything}, None, [held.name])
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
