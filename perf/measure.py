"""The benchmark measurements, each a function returning a JSON-able dict.

Every measurement drives the kit's own code (``build_client_model``, ``prepare_cohort``,
``train_client``, ``run_round``, ``merged_model``, ``harmonize_datasets``, the notebook
runner), so the numbers are the cost of what users actually run. ``perf/run.py`` calls
each strategy measurement in its own process, so its peak memory is that strategy's alone.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from duallora.base.config import TrainConfig
from perf.costs import strategy_costs
from perf.timing import (
    current_rss_bytes,
    interleaved_timing,
    peak_rss_bytes,
    repeat_timing,
    time_call,
)

N_CLIENTS = 4  # Siemens, Philips, GE, Canon: the paper's federation


def bench_config(preset: str, strategy: str, data: str | Path = "", cache_dir: str | Path = "",
                 **overrides: Any) -> TrainConfig:
    """The tutorial default (or CineMA ``base``) for one strategy, on the benchmark cohort.

    The tutorial preset uses the committed phantom foundation model when the checkout has it;
    ``base`` starts from a random init (timing and bytes do not depend on the weights).
    """
    from duallora.notebooks.experiments import phantom_fm_available

    fm = "phantom" if preset == "tutorial" and phantom_fm_available(preset) else "none"
    values: dict[str, Any] = {"data": str(data), "strategy": strategy, "model_size": preset,
                              "fm": fm, "cache_dir": str(cache_dir)}
    values.update(overrides)
    return TrainConfig.from_dict(values)


def environment() -> dict[str, Any]:
    """Machine facts printed next to the numbers (timings only compare on the same machine)."""
    import os

    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan, math.nan, math.nan)
    return {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "processor": _cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": [round(v, 2) for v in load],
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# -- per strategy ----------------------------------------------------------------------------
def synthetic_client(model: Any, config: TrainConfig, n_subjects: int, seed: int = 0) -> Any:
    """``n_subjects`` random volumes of the preset's size as one client's training split (both
    labels), replaced by cached prefix states exactly when the kit's loop would use them."""
    from duallora.federated.client_model import model_input_size
    from duallora.federated.cohort import ClientData, SplitData
    from duallora.federated.prefix_cache import prefix_states
    from duallora.federated.prepare import cache_folder, use_prefix_cache

    image_size, _ = model_input_size(config)
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((n_subjects, 2, *image_size), generator=generator)
    labels = torch.arange(n_subjects) % 2
    ids = [f"synthetic/{i:03d}" for i in range(n_subjects)]
    upto = use_prefix_cache(config, model)
    if upto is None:
        inputs = {"x": images}
    else:
        folder = cache_folder(config) if config.cache_dir else None
        inputs = prefix_states(model.core, images, upto, config.eval_batch_size, folder)
    split = SplitData(inputs, labels, ids)
    empty = split.take([])
    return ClientData("synthetic", {"train": split, "val": empty, "test": empty}, upto,
                      ["synthetic"])


def state_bytes_per_subject(data: Any) -> int:
    """Bytes one training subject occupies in memory (images, or its cached prefix state)."""
    inputs = data.splits["train"].inputs
    return int(sum(t[0].numel() * t.element_size() for t in inputs.values()))


def measure_strategy(config: TrainConfig, *, repeats: int, warmup: int,
                     step_batch: int = 0, client: str = "") -> dict[str, Any]:
    """Parameters, message bytes, training time and peak memory of one strategy.

    ``step_batch > 0`` times one optimizer step on ``step_batch`` synthetic subjects (used for
    CineMA ``base`` on CPU); otherwise one local epoch on ``client`` (default: the client with
    the most training subjects) of ``config.data``. Either way through ``train_client``.
    """
    from duallora.federated.client import train_client
    from duallora.federated.client_model import build_client_model
    from duallora.federated.prepare import prepare_cohort

    build_seconds, model = time_call(lambda: build_client_model(config))
    row = strategy_costs(model, N_CLIENTS)
    row.update({"preset": config.model_size, "blocks": config.blocks,
                "build_seconds": build_seconds, "fm": config.fm})
    one_epoch = dataclasses.replace(config, local_epochs=1)
    if step_batch > 0:
        one_epoch = dataclasses.replace(one_epoch, batch_size=step_batch)
        data = synthetic_client(model, config, step_batch)
        what = "step"
    else:
        cohort = prepare_cohort(config, model)
        name = client or max(cohort.train_clients, key=lambda c: cohort.train_clients[c].n_train())
        data = cohort.train_clients[name]
        what = "epoch"
    rss_before = current_rss_bytes()
    timing, update = repeat_timing(
        lambda: train_client(model, None, None, data, one_epoch, round_idx=1), repeats, warmup)
    row.update({
        "timed": what, "client": data.name, "n_train": data.n_train(),
        "batch_size": one_epoch.batch_size, "steps": int(update.metrics["steps"]),
        "prefix_cache": data.from_block is not None, "from_block": data.from_block,
        "input_bytes_per_subject": state_bytes_per_subject(data),
        f"{what}_seconds": timing.to_dict(),
        "seconds_per_subject": timing.median / max(data.n_train(), 1),
        "rss_before_training_bytes": rss_before, "peak_rss_bytes": peak_rss_bytes(),
    })
    return row


def measure_prefix_compute(config: TrainConfig, n_subjects: int) -> dict[str, Any]:
    """One-off cost of the frozen prefix for ``n_subjects`` synthetic subjects (one timing)."""
    from duallora.federated.client_model import build_client_model, model_input_size
    from duallora.federated.prefix_cache import compute_prefix
    from duallora.federated.prepare import use_prefix_cache

    model = build_client_model(config)
    upto = use_prefix_cache(config, model)
    if upto is None:
        return {"available": False}
    image_size, _ = model_input_size(config)
    images = torch.rand((n_subjects, 2, *image_size), generator=torch.Generator().manual_seed(0))
    seconds, states = time_call(lambda: compute_prefix(model.core, images, upto, n_subjects))
    per_subject = sum(t[0].numel() * t.element_size() for t in states.values())
    return {"available": True, "preset": config.model_size, "upto_block": upto,
            "n_subjects": n_subjects, "seconds": seconds,
            "seconds_per_subject": seconds / n_subjects, "bytes_per_subject": int(per_subject),
            "shapes": {k: list(v.shape[1:]) for k, v in states.items()},
            "peak_rss_bytes": peak_rss_bytes()}


# -- prefix cache ----------------------------------------------------------------------------
def _payload_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if sorted(a) != sorted(b):
        return math.inf
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a), default=0.0)


def measure_prefix_cache(config: TrainConfig, *, repeats: int, warmup: int) -> dict[str, Any]:
    """A full ``med_duallora`` round (every client trains, server aggregates) with and without
    the prefix cache, timed back to back, plus how far apart the two results are."""

    from duallora.federated.client_model import build_client_model
    from duallora.federated.prefix_cache import clear_memory
    from duallora.federated.prepare import prepare_cohort
    from duallora.federated.rounds import run_round
    from duallora.federated.sites import InProcessSites
    from duallora.federated.state import RunState
    from duallora.federated.strategies import get_strategy

    strategy = get_strategy("med_duallora")
    config = dataclasses.replace(config, strategy="med_duallora")
    cached_cfg = dataclasses.replace(config, prefix_cache=True)
    full_cfg = dataclasses.replace(config, prefix_cache=False)
    model = build_client_model(config, strategy)
    with tempfile.TemporaryDirectory(prefix="prefix-bench-") as fresh:
        cached_cfg = dataclasses.replace(cached_cfg, cache_dir=fresh)  # a cold cache, timed
        clear_memory()
        full_load, full_cohort = time_call(lambda: prepare_cohort(full_cfg, model))
        cached_load, cached_cohort = time_call(lambda: prepare_cohort(cached_cfg, model))

    def one_round(cohort: Any, cfg: TrainConfig) -> RunState:
        model.set_state(None, None)  # back to the shared init: the round-0 global payload
        state = RunState(global_payload=model.shared_payload())
        run_round(1, cfg, strategy, InProcessSites(cfg, model, cohort), state)
        return state

    timings, states = interleaved_timing(
        {"cached": lambda: one_round(cached_cohort, cached_cfg),
         "full": lambda: one_round(full_cohort, full_cfg)}, repeats, warmup)
    logits_diff = _logits_difference(model, full_cohort, cached_cohort, config.batch_size)
    cached, full = states["cached"], states["full"]
    private_diff = max((_payload_difference(cached.private[c], full.private[c])
                        for c in full.private), default=0.0)
    global_diff = _payload_difference(cached.global_payload, full.global_payload)
    identical = all(torch.equal(cached.global_payload[k], full.global_payload[k])
                    for k in full.global_payload)
    n_train = {name: c.n_train() for name, c in full_cohort.train_clients.items()}
    return {
        "strategy": "med_duallora", "preset": config.model_size, "blocks": config.blocks,
        "local_epochs": config.local_epochs, "batch_size": config.batch_size,
        "n_train": n_train, "from_block": next(iter(cached_cohort.train_clients.values()))
        .from_block,
        "round_seconds_cached": timings["cached"].to_dict(),
        "round_seconds_full": timings["full"].to_dict(),
        "speedup": timings["full"].median / timings["cached"].median,
        "prefix_compute_seconds": max(cached_load - full_load, 0.0),
        "max_abs_diff_global": global_diff, "max_abs_diff_private": private_diff,
        "bitwise_identical": bool(identical), "max_abs_diff_logits": logits_diff,
        "loss_cached": [m["value"] for m in cached.metrics if m["metric"] == "loss"],
        "loss_full": [m["value"] for m in full.metrics if m["metric"] == "loss"],
    }


@torch.no_grad()
def _logits_difference(model: Any, full: Any, cached: Any, batch: int) -> float:
    """Largest logit difference between the full forward and the cached-prefix forward on one
    training batch of the largest client, at the shared init (the same weights for both)."""
    from duallora.federated.client import set_mode

    name = max(full.train_clients, key=lambda c: full.train_clients[c].n_train())
    rows = list(range(min(batch, full.train_clients[name].n_train())))
    model.set_state(None, None)
    set_mode(model, training=False)
    plain = model.forward(full.train_clients[name].splits["train"].take(rows).inputs, None)
    fast = model.forward(cached.train_clients[name].splits["train"].take(rows).inputs,
                         cached.train_clients[name].from_block)
    return float((plain - fast).abs().max())


# -- inference -------------------------------------------------------------------------------
def randomize_lora_b(model: Any, seed: int = 0, std: float = 0.02) -> None:
    """LoRA B starts at zero (adapters do nothing); give every B small random values so the
    unmerged and merged models really compute with both adapters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.params.items():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


@torch.no_grad()
def measure_inference(config: TrainConfig, *, batch: int, repeats: int, warmup: int
                      ) -> dict[str, Any]:
    """Forward time of the plain foundation model, of Med-DualLoRA with both adapters active
    (unmerged), and with both merged into the weights; interleaved, as ratios to the plain one."""
    from duallora.federated.adapters import merged_model
    from duallora.federated.client_model import (
        build_client_model,
        load_foundation,
        model_input_size,
    )

    config = dataclasses.replace(config, strategy="med_duallora")
    plain = load_foundation(config).eval()
    dual = build_client_model(config)
    randomize_lora_b(dual, config.seed)
    dual.use_adapters(("global", "local"))
    unmerged = dual.core.eval()
    merged = merged_model(dual.module, ["global", "local"]).eval()
    image_size, _ = model_input_size(config)
    x = torch.rand((batch, 2, *image_size), generator=torch.Generator().manual_seed(1))
    timings, outputs = interleaved_timing(
        {"base": lambda: plain(x), "unmerged": lambda: unmerged(x), "merged": lambda: merged(x)},
        repeats, warmup)
    return {
        "preset": config.model_size, "blocks": config.blocks, "batch": batch,
        "seconds": {k: v.to_dict() for k, v in timings.items()},
        "unmerged_over_base": timings["unmerged"].median / timings["base"].median,
        "merged_over_base": timings["merged"].median / timings["base"].median,
        "max_abs_diff_merged_vs_unmerged": float((outputs["merged"] - outputs["unmerged"])
                                                 .abs().max()),
    }


# -- data ------------------------------------------------------------------------------------
def measure_harmonization(raw_root: Path, out_root: Path, *, repeats: int,
                          workers: int | None = None) -> dict[str, Any]:
    """Subjects per second of ``harmonize_datasets`` on a phantom cohort, each repeat into a
    fresh folder (a cold worker pool included: that is what a user's run pays)."""
    import pandas as pd

    from data_prep.conventions import phantom_raw_roots
    from data_prep.harmonize import harmonize_datasets
    from perf.timing import summarize

    samples, n_subjects = [], 0
    for index in range(repeats):
        out = Path(out_root) / f"harmonized-{index}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, _ = time_call(lambda out=out: harmonize_datasets(
            out=out, seed=0, workers=workers, **phantom_raw_roots(Path(raw_root))))
        n_subjects = len(pd.read_csv(out / "metadata.csv"))
        samples.append(seconds)
        shutil.rmtree(out, ignore_errors=True)
    timing = summarize(samples)
    return {"n_subjects": n_subjects, "workers": workers, "seconds": timing.to_dict(),
            "subjects_per_second": n_subjects / timing.median}


# -- notebooks -------------------------------------------------------------------------------
def measure_notebooks(out_dir: Path, data_dir: Path, quick: bool = True) -> dict[str, Any]:
    """Run the whole notebook series (fresh folders, so cohort building is included)."""
    from duallora.notebooks.runner import run_notebooks

    start = time.perf_counter()
    results = run_notebooks(out_dir=out_dir, data_dir=data_dir, quick=quick, seed=0)
    return {"quick": quick, "total_seconds": time.perf_counter() - start,
            "notebooks": {r.name: r.seconds for r in results}}


def executed_notebook_times(folder: Path) -> dict[str, Any] | None:
    """Per-notebook durations papermill stored in executed notebooks (e.g. ``reports/notebooks``
    after ``make demo``), or None when there are none."""
    import json

    rows: dict[str, float] = {}
    modes = set()
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        try:
            meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        except (OSError, ValueError):
            continue
        if meta.get("duration") is None:
            continue
        rows[path.name] = float(meta["duration"])
        modes.add(bool(meta.get("parameters", {}).get("quick", False)))
    if not rows:
        return None
    return {"notebooks": rows, "total_seconds": sum(rows.values()),
            "quick": sorted(modes) == [True], "mixed_modes": len(modes) > 1}
