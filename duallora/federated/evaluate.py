"""Score models without training: a kit run's exported models, or an upstream classifier.

``duallora evaluate`` calls ``evaluate_model``. What ``--model`` may be:

- a run directory, its ``checkpoints/final/`` folder (``federated.export``), or its
  ``checkpoints/last.pt``: the run's ``config.json`` rebuilds the same frozen model and
  adapters, the exported tensors are loaded into it, and every vendor's test split is scored by
  that vendor's personalized model (split ``test``) and by the global model (``test_global``,
  and ``holdout`` for a held-out vendor), exactly as the run's final test did. On the run's
  cohort, device and precision the predictions are the run's, to the last bit;
- a ``.safetensors`` ConvViT classifier, e.g. CineMA's fine-tuned CVD classifier, loaded
  strictly (every name and shape, ``model.load_finetuned``): scored on every vendor's test split
  (split ``test``), a centralized reference row beside the federated strategies.

Either way the output folder gets ``predictions.csv`` and ``metrics.csv`` in the run directory's
format (per vendor, ``pooled`` and ``macro``, bootstrap CIs), so ``duallora.results`` reads it
like a run, plus ``evaluation.json`` (what was scored, where, how).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from duallora.base.config import TrainConfig
from duallora.base.device import autocast, resolve_device, to_compute
from duallora.base.rundir import RunDir
from duallora.errors import KitError
from duallora.federated.client import evaluate_client, split_private
from duallora.federated.cohort import ClientData, SplitData
from duallora.federated.serialization import Payload
from duallora.results.evaluation import prediction_rows, summary_rows

EVAL_SPLITS = ("test", "test_global", "holdout")  # in predictions.csv order, as a run writes
DEFAULT_BOOTSTRAP = 1000


@dataclass
class ExportedModels:
    """What a finished run selected: the global payload, each site's (shared, private) pair,
    and the head standardization by owner (``global`` or a site)."""

    config: TrainConfig
    source: Path
    global_payload: Payload | None = None
    sites: dict[str, tuple[Payload, Payload]] = field(default_factory=dict)
    head_norm: dict[str, Payload] = field(default_factory=dict)
    finetuned: dict[str, Payload] = field(default_factory=dict)  # fedavg_lora_ft's models


def _run_config(run_root: Path, where: Path) -> TrainConfig:
    config = RunDir(run_root).config
    if not config.is_file():
        raise KitError(f"--model {where}: no config.json in {run_root} (a kit run's exported "
                       "models are read with the run's configuration)")
    return TrainConfig.load(config)


def _tensors(folder: Path) -> dict[str, Payload]:
    return ({path.stem: load_file(str(path)) for path in sorted(folder.glob("*.safetensors"))}
            if folder.is_dir() else {})


def read_export(path: Path) -> ExportedModels:
    """The selected models of a run from its folder, ``checkpoints/final`` or ``last.pt``."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        return _read_checkpoint(path)
    final = RunDir(path).final if RunDir(path).checkpoints.is_dir() else path
    if not final.is_dir():
        raise KitError(f"--model {path}: not a run directory, its checkpoints/final folder, a "
                       "last.pt checkpoint or a .safetensors classifier")
    config = _run_config(final.parents[1], path)
    global_file = final / "global.safetensors"
    shared, private = _tensors(final / "shared"), _tensors(final / "private")
    if not global_file.is_file() and not shared and not private:
        raise KitError(f"--model {path}: {final} holds no exported model (global.safetensors, "
                       "shared/ or private/); is the run finished?")
    sites = {name: (shared.get(name, {}), private.get(name, {}))
             for name in sorted(set(shared) | set(private))}
    return ExportedModels(config, final,
                          load_file(str(global_file)) if global_file.is_file() else None,
                          sites, _tensors(final / "head_norm"), _tensors(final / "finetuned"))


def _read_checkpoint(path: Path) -> ExportedModels:
    """The same selection from ``last.pt`` (an in-process run: private parts are payloads)."""
    from duallora.federated.state import RunState

    rundir = RunDir(path.parents[1])
    config = _run_config(rundir.root, path)
    try:
        state = RunState.from_checkpoint(torch.load(path, map_location="cpu",
                                                    weights_only=False))
    except Exception as err:  # a damaged or foreign file: one clear line
        raise KitError(f"--model {path}: cannot read the run checkpoint ({err})") from err
    from duallora.federated.strategies import get_strategy

    if get_strategy(config.strategy, config.head).finetune:
        raise KitError(f"--model {path}: {config.strategy}'s fine-tuned models are in "
                       "checkpoints/final/finetuned, not in last.pt; evaluate the final folder")
    if not state.finished:
        raise KitError(f"--model {path}: the run is not finished (round {state.round} of "
                       f"{config.rounds}); resume it first")
    sites = {}
    for name, best in sorted(state.best.items()):
        if best.private is not None and not isinstance(best.private, dict):
            raise KitError(f"--model {path}: site {name}'s private part stayed on the site "
                           "(a Flower run); evaluate the site's exported folder instead")
        sites[name] = (best.received or {}, split_private(best.private)[0])
    return ExportedModels(config, path,
                          state.best_global.received if state.best_global else None,
                          sites, state.head_norm)


def _with(client: ClientData, splits: tuple[str, ...]) -> ClientData:
    """The client with only ``splits`` (no prefix is computed for data that is not used)."""
    return ClientData(client.name, {split: client.splits[split] for split in splits},
                      client.from_block, client.vendors)


def _eval_clients(config: TrainConfig, model: Any, split: str = "test"
                  ) -> tuple[dict[str, ClientData], ClientData | None]:
    """Every vendor's ``split`` (and, for the test split, the hold-out) as the run saw it:
    images replaced by cached prefix states when the run used them."""
    from duallora.federated.cohort import trim_train
    from duallora.federated.prepare import (
        load_vendor_clients,
        set_holdout_aside,
        to_prefix_states,
        use_prefix_cache,
    )
    from duallora.federated.strategies import INSTANCE

    vendors = load_vendor_clients(config)
    holdout = set_holdout_aside(config, vendors)
    if split != "test":  # the hold-out has a test split only
        holdout = None
    splits: tuple[str, ...] = (split,)
    if model.strategy.mixing == INSTANCE:  # FedDPA weighs each test instance by the
        splits = ("train", split)           # training instances the run used
        for client in vendors.values():
            trim_train(client, config.max_train_per_client)
    vendors = {name: _with(c, splits) for name, c in vendors.items()}
    upto = use_prefix_cache(config, model)
    if upto is not None:
        vendors = {name: to_prefix_states(c, model, upto, config) for name, c in vendors.items()}
        if holdout is not None:
            holdout = to_prefix_states(holdout, model, upto, config)
    return vendors, holdout


def evaluate_export(export: ExportedModels, data: Path, overrides: dict[str, Any],
                    split: str = "test") -> tuple[list[dict[str, Any]], TrainConfig]:
    """Prediction rows of the exported models on ``data`` (the run's final test splits; with
    ``split="val"`` every vendor's validation split instead, rows ``val`` for its personalized
    model and ``val_global`` for the global model, nothing for the hold-out)."""
    from duallora.data import read_metadata
    from duallora.federated.client_model import build_client_model
    from duallora.federated.strategies import get_strategy

    values = {**dataclasses.asdict(export.config), "data": str(data), **overrides}
    vendors_here = set(read_metadata(data)["vendor"].astype(str))
    if values.get("holdout_vendor") and values["holdout_vendor"] not in vendors_here:
        values["holdout_vendor"] = ""  # another cohort: no hold-out vendor to score
    config = TrainConfig.from_dict(values)
    strategy = get_strategy(config.strategy, config.head)
    model = build_client_model(config, strategy)
    vendors, holdout = _eval_clients(config, model, split)
    vendors = {name: c for name, c in vendors.items() if len(c.splits[split])}
    everyone = list(vendors.values()) + ([holdout] if holdout is not None else [])
    for client in everyone:
        client.head_norm = export.head_norm.get("global", export.head_norm.get(client.name))
    names = EVAL_SPLITS if split == "test" else (split, f"{split}_global", "holdout")
    by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for name in sorted(vendors):
        owner = "pooled" if strategy.pooled else name
        if owner in export.sites:
            received, private = export.sites[owner]
            received = export.finetuned.get(owner, received)  # fedavg_lora_ft: fine-tuned
            preds = evaluate_client(model, received or None, private or None, vendors[name],
                                    split, config)
            by_split[names[0]] += prediction_rows(preds.subject_ids, name, names[0],
                                                  preds.labels, preds.probs)
    if strategy.has_global_model and export.global_payload:
        targets = [(vendors[name], names[1]) for name in sorted(vendors)]
        if holdout is not None:
            targets.append((holdout, "holdout"))
        for client, target in targets:
            preds = evaluate_client(model, export.global_payload, None, client, split, config,
                                    global_only=True)
            by_split[target] += prediction_rows(preds.subject_ids, client.name, target,
                                                preds.labels, preds.probs)
    return [row for name in names for row in by_split[name]], config


@torch.no_grad()
def predict_images(core: torch.nn.Module, split: SplitData, batch_size: int,
                   device: torch.device, precision: str) -> np.ndarray:
    """P(disease) of a plain ConvViT classifier (class 1 of 2), in batches on ``device``."""
    core.eval()
    probs = []
    for start in range(0, len(split), batch_size):
        images = split.inputs["x"][start:start + batch_size]
        with autocast(device, precision):
            logits = core(to_compute({"x": images}, device)["x"])
        probs.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(probs).numpy() if probs else np.zeros(0, dtype=np.float32)


def evaluate_classifier(path: Path, data: Path, *, size: str, device: str, precision: str,
                        batch_size: int) -> list[dict[str, Any]]:
    """Prediction rows of a fine-tuned ConvViT classifier file on every vendor's test split."""
    from duallora.base.presets import PRESETS
    from duallora.data import load_cohort_arrays
    from duallora.federated.cohort import split_clients
    from duallora.model import load_foundation_model
    from duallora.model.checkpoints import read_metadata, read_state_dict

    size = size or read_metadata(path).get("size", "")
    if size not in PRESETS:
        raise KitError(f"--model {path}: give --model-size (one of {', '.join(PRESETS)}; "
                       "CineMA's classifiers are 'base')")
    state = read_state_dict(path)
    head = state.get("pred_head_dict.cls.weight")
    if head is None:
        raise KitError(f"--model {path}: not a fine-tuned classifier (no classification head; "
                       "MAE weights are a foundation model: duallora train --fm)")
    if int(head.shape[0]) != 2:
        raise KitError(f"--model {path}: a {int(head.shape[0])}-class classifier; the kit scores "
                       "2-class (NOR vs disease) classifiers")
    del state
    try:
        core = load_foundation_model(path, size=size)  # strict: every name and shape
    except KitError as err:
        raise KitError(f"--model {path}: {err}") from err
    target = resolve_device(device)
    core.to(target)
    preset = PRESETS[size]
    images, frame = load_cohort_arrays(data, image_size=preset.image_size,
                                       crop_size=preset.crop_size)
    vendors = split_clients(torch.as_tensor(images, dtype=torch.float32), frame)
    rows: list[dict[str, Any]] = []
    for name, client in sorted(vendors.items()):
        split = client.splits["test"]
        probs = predict_images(core, split, batch_size, target, precision)
        rows += prediction_rows(split.subject_ids, name, "test", split.labels.numpy(), probs)
    return rows


def evaluate_model(model_path: Path, data: Path, out: Path, *, device: str | None = None,
                   precision: str | None = None, fm: str | None = None,
                   cache_dir: str | None = None, bootstrap: int | None = None,
                   model_size: str = "", seed: int = 0) -> Path:
    """Score ``model_path`` on the harmonized cohort ``data``; write ``out``'s files."""
    model_path, data, out = Path(model_path), Path(data), Path(out)
    if not (data / "metadata.csv").is_file():
        raise KitError(f"--data {data}: not a harmonized cohort (no metadata.csv)")
    started = time.perf_counter()
    record: dict[str, Any] = {"model": str(model_path), "data": str(data)}
    if model_path.is_file() and model_path.suffix == ".safetensors":
        rows = evaluate_classifier(model_path, data, size=model_size, device=device or "auto",
                                   precision=precision or "fp32", batch_size=16)
        round_idx, n_boot = 0, DEFAULT_BOOTSTRAP if bootstrap is None else bootstrap
        record.update(kind="classifier", device=str(resolve_device(device or "auto")),
                      precision=precision or "fp32")
    else:
        export = read_export(model_path)
        overrides = {key: value for key, value in {"device": device, "precision": precision,
                                                   "fm": fm, "cache_dir": cache_dir,
                                                   "bootstrap": bootstrap}.items()
                     if value is not None}
        rows, config = evaluate_export(export, data, overrides)
        round_idx, n_boot, seed = config.rounds, config.bootstrap, config.seed
        record.update(kind="kit run", source=str(export.source), strategy=config.strategy,
                      device=str(resolve_device(config.device)), precision=config.precision)
    out.mkdir(parents=True, exist_ok=True)
    rundir = RunDir(out)
    rundir.write_predictions(rows)
    frame = pd.DataFrame(rows)
    rundir.write_metrics(summary_rows(frame, round_idx, n_boot, seed) if len(frame) else [])
    record.update(n_predictions=len(rows), bootstrap=n_boot, seconds=time.perf_counter() - started)
    (out / "evaluation.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out
