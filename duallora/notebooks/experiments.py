"""Build-or-reuse the data and the training runs that the notebooks share.

Every notebook receives the same ``data_dir``; this module gives it one folder per mode
(``data_dir/quick`` and ``data_dir/full``) holding the phantom cohort in its raw layouts, the
harmonized cohort, the prefix-feature cache and every training run. Each step leaves a small
JSON marker when it finishes, so the next notebook (or the next ``make demo``) reuses the result
instead of computing it again, and a changed setting (scale, seed, run configuration) redoes it.

Notebooks call only these functions; the algorithms live in ``data_prep`` and
``duallora.federated``; finished runs are read back with ``duallora.results.run_reader``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from duallora.errors import KitError
from duallora.federated.reuse import (  # RUN_MARKER re-exported: notebooks, tests
    RUN_MARKER,
    read_marker,
    write_marker,
)

if TYPE_CHECKING:  # imported lazily at run time: notebooks import this module first
    from duallora.base.config import TrainConfig

# Phantom cohort size (fraction of the real datasets' subject counts). Quick mode keeps the
# minimum the phantom writer allows (three subjects per vendor and label, 24 in all), which
# still gives every vendor both labels in every federated split.
QUICK_SCALE = 0.01
FULL_SCALE = 0.2
PHANTOM_MARKER = "phantoms.json"
COHORT_MARKER = "cohort.json"
FLOWER_RUN_MARKER = "flower_run.json"


@dataclass(frozen=True)
class Workspace:
    """The per-mode cache folder shared by every notebook of one series."""

    root: Path
    quick: bool
    seed: int

    @property
    def raw(self) -> Path:
        return self.root / "phantoms"

    @property
    def harmonized(self) -> Path:
        return self.root / "harmonized"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def prefix_cache(self) -> Path:
        return self.root / "prefix_cache"

    @property
    def default_scale(self) -> float:
        return QUICK_SCALE if self.quick else FULL_SCALE


def workspace(data_dir: str | Path, quick: bool, seed: int = 0) -> Workspace:
    """``data_dir/quick`` or ``data_dir/full`` (created), for this seed."""
    root = Path(data_dir).expanduser().resolve() / ("quick" if quick else "full")
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root, bool(quick), int(seed))


# -- data ------------------------------------------------------------------------------------
def raw_roots(raw: Path) -> dict[str, Path]:
    """The three dataset roots inside a phantom folder, as ``harmonize_datasets`` expects them."""
    return {"acdc": raw / "ACDC" / "database", "mnms": raw / "MnM" / "OpenDataset",
            "mnms2": raw / "MnM2"}


def ensure_phantoms(ws: Workspace, scale: float | None = None) -> Path:
    """The phantom cohort in the raw ACDC / M&Ms / M&Ms-2 layouts, written once per setting."""
    from data_prep.phantoms import write_phantom_cohort

    wanted = {"scale": float(scale or ws.default_scale), "seed": ws.seed}
    if read_marker(ws.raw / PHANTOM_MARKER) == wanted:
        return ws.raw
    if ws.raw.exists():
        shutil.rmtree(ws.raw)
    # v1 until the benchmark issue moves the demo to v2 (README numbers are v1's)
    write_phantom_cohort(ws.raw, scale=wanted["scale"], seed=ws.seed, generator="v1")
    write_marker(ws.raw / PHANTOM_MARKER, wanted)
    return ws.raw


def ensure_cohort(ws: Workspace, scale: float | None = None, *, acdc: str | Path | None = None,
                  mnms: str | Path | None = None, mnms2: str | Path | None = None) -> Path:
    """The harmonized cohort (``metadata.csv`` + volumes), built once and then reused.

    With no real root given, the phantom cohort is written first and harmonized; ``scale=None``
    reuses the cohort already built (at any scale), else builds the mode's default. With real
    roots, those are harmonized instead (into ``harmonized_real``, never mixed with phantoms).
    """
    from data_prep.harmonize import harmonize_datasets

    real = {k: str(Path(v).resolve()) for k, v in
            (("acdc", acdc), ("mnms", mnms), ("mnms2", mnms2)) if v}
    if real:
        out = ws.root / "harmonized_real"
        wanted: dict[str, Any] = {"roots": real, "seed": ws.seed}
        roots = {k: Path(v) for k, v in real.items()}
    else:
        out = ws.harmonized
        if scale is None:  # reuse whatever scale notebook 01 built, else the mode default
            built = (read_marker(out / COHORT_MARKER) or {}).get("settings", {})
            scale = built.get("phantom_scale") if built.get("seed") == ws.seed else None
        wanted = {"phantom_scale": float(scale or ws.default_scale), "seed": ws.seed}
        roots = raw_roots(ws.raw)
    marker = read_marker(out / COHORT_MARKER)
    if marker is not None and marker.get("settings") == wanted \
            and (out / "metadata.csv").is_file():
        return out
    if not real:
        ensure_phantoms(ws, wanted["phantom_scale"])
    if marker is not None and marker.get("settings") != wanted and out.exists():
        shutil.rmtree(out)  # built from other settings: start clean, never mix cohorts
    harmonize_datasets(out=out, seed=ws.seed, **roots)
    write_marker(out / COHORT_MARKER, {"settings": wanted})
    return out


def dataset_roots(ws: Workspace, *, acdc: str | Path | None = None,
                  mnms: str | Path | None = None, mnms2: str | Path | None = None
                  ) -> dict[str, Path]:
    """The raw roots the cohort came from: the real ones when given, else the phantoms'."""
    real = {k: Path(v) for k, v in (("acdc", acdc), ("mnms", mnms), ("mnms2", mnms2)) if v}
    return real or raw_roots(ws.raw)


def cohort_is_ready(ws: Workspace) -> bool:
    return (ws.harmonized / COHORT_MARKER).is_file()


def subject_records(roots: dict[str, Path]) -> dict[str, Any]:
    """``subject_id -> data_prep.records.SubjectRecord`` for the raw dataset roots (no image is
    read: the readers only parse folders and tables)."""
    from data_prep.harmonize import collect_records

    records, _ = collect_records(roots.get("acdc"), roots.get("mnms"), roots.get("mnms2"))
    return {record.subject_id: record for record in records}


def intensity_samples(metadata: pd.DataFrame, harmonized: Path, records: dict[str, Any],
                      per_vendor: int = 3, voxels: int = 20000, seed: int = 0) -> pd.DataFrame:
    """ED voxel intensities of a few subjects per vendor, before and after harmonization.

    Returns long rows ``vendor, subject_id, stage (raw|harmonized), intensity``; raw values are
    in the scanner's own units, harmonized ones in [0, 1].
    """
    import nibabel as nib
    import numpy as np

    from data_prep.volumes import read_frames

    rng = np.random.default_rng(seed)
    rows = []
    for vendor, part in metadata.groupby("vendor", sort=True):
        chosen = part.sort_values("subject_id").head(per_vendor)
        for _, row in chosen.iterrows():
            record = records.get(row["subject_id"])
            after = np.asarray(nib.load(harmonized / row["ed_path"]).dataobj, dtype=np.float32)
            after = after / 255.0 if after.max() > 1.0 else after
            stages = [("harmonized", after.ravel())]
            if record is not None:
                stages.insert(0, ("raw", read_frames(record).ed.ravel()))
            for stage, values in stages:
                pick = rng.choice(values.size, size=min(voxels, values.size), replace=False)
                rows.append(pd.DataFrame({"vendor": vendor, "subject_id": row["subject_id"],
                                          "stage": stage, "intensity": values[pick]}))
    return pd.concat(rows, ignore_index=True)


# -- training runs ---------------------------------------------------------------------------
def phantom_fm_available(size: str = "tutorial") -> bool:
    from duallora.model import phantom_fm_path

    return phantom_fm_path(size).is_file()


def train_config(ws: Workspace, strategy: str, **overrides: Any):
    """A ``TrainConfig`` for this workspace: its cohort, seed, cache, quick settings.

    ``fm`` defaults to the committed phantom foundation model, or a random init (``none``)
    when this checkout does not have it yet (the notebook prints which one it used).
    """
    from duallora.base.config import TrainConfig, quick_overrides

    values: dict[str, Any] = {"data": str(ws.harmonized), "strategy": strategy,
                              "seed": ws.seed, "cache_dir": str(ws.prefix_cache),
                              "fm": "phantom" if phantom_fm_available() else "none"}
    if ws.quick:
        values.update(quick_overrides())
    values.update(overrides)
    return TrainConfig.from_dict(values)


def fm_description(config) -> str:
    """What a run's ``fm`` setting means, for the notebooks' printouts."""
    if config.fm == "phantom":
        return f"committed phantom FM ({config.model_size})"
    if config.fm == "none":
        return "random init: this checkout has no committed phantom FM yet"
    return f"weights from {config.fm}"


def ensure_run(ws: Workspace, name: str, strategy: str, *, progress: bool = True,
               **overrides: Any) -> Path:
    """Train ``strategy`` into ``ws.runs/name`` unless the same configuration finished there
    (``duallora.federated.reuse.ensure_trained``: resumed when interrupted, replaced when the
    configuration changed; adapter norms logged per round; one torch thread)."""
    from duallora.federated.reuse import ensure_all_trained

    return ensure_all_trained([(train_config(ws, strategy, **overrides), ws.runs / name)],
                              progress=progress)[0]


def ensure_runs(ws: Workspace, specs: dict[str, dict[str, Any]], progress: bool = True
                ) -> dict[str, Path]:
    """``{name: {"strategy": ..., **overrides}}`` -> ``{name: run folder}``, in order; missing
    runs train side by side, one per core (``DUALLORA_JOBS`` sets how many)."""
    from duallora.federated.reuse import ensure_all_trained

    jobs = []
    for name, spec in specs.items():
        spec = dict(spec)
        jobs.append((train_config(ws, spec.pop("strategy"), **spec), ws.runs / name))
    return dict(zip(specs, ensure_all_trained(jobs, progress=progress), strict=True))


def flower_cohort(ws: Workspace, n_clients: int) -> Path:
    """The cohort that ``n_clients`` local Flower sites train on, for the in-process reference
    of the same run: ``ws.harmonized`` when every vendor is a site, else a view of the first
    ``n_clients`` vendors (``ws.root/harmonized_<vendors>``: filtered metadata, linked
    volumes), the ones ``flower-local --clients n_clients`` starts."""
    from duallora.flower.localhost.run import cohort_vendors, cohort_view, first_vendors

    vendors = first_vendors(ws.harmonized, n_clients)
    if len(vendors) == len(cohort_vendors(ws.harmonized)):
        return ws.harmonized
    return cohort_view(ws.harmonized, vendors, ws.root / f"harmonized_{'_'.join(vendors)}")


@dataclass(frozen=True)
class FlowerJob:
    """One localhost Flower run for ``ensure_flower_runs``: its training configuration and
    its central-DP settings (noise multiplier 0: no DP)."""

    config: TrainConfig
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0


def flower_sites_dir(run_dir: Path) -> Path:
    """The local sites' folder (their data views and node-local state) of the Flower runs
    beside ``run_dir``: every run of one ``ensure_flower_runs`` call shares it."""
    return Path(run_dir).parent / "flower_sites"


def ensure_flower_runs(jobs: dict[Path, FlowerJob], n_clients: int, *,
                       timeout: float = 3600.0) -> dict[Path, Path]:
    """``flower-local`` into each run folder of ``jobs`` unless a finished run with the same
    settings is there (the Flower counterpart of ``ensure_run``: it reruns only what changed).

    The runs still to do go side by side to **one** set of local sites (a SuperLink, and per
    vendor a SuperNode and a site worker), started once: a SuperLink serves many runs at once,
    each site worker answers their messages one at a time, and the runs' waits for Flower's
    message round trips overlap. Each run's numbers are those it gets alone. All jobs must
    read the same cohort.
    """
    from duallora.flower.localhost.run import localhost_sites
    from duallora.flower.settings import FlowerSettings

    def wanted(job: FlowerJob) -> dict[str, Any]:
        return {"config": json.loads(job.config.to_json()), "clients": n_clients,
                "dp_noise_multiplier": job.dp_noise_multiplier,
                "dp_clipping_norm": job.dp_clipping_norm}

    runs = {Path(run_dir): job for run_dir, job in jobs.items()}
    todo = {run_dir: job for run_dir, job in runs.items()
            if read_marker(run_dir / FLOWER_RUN_MARKER) != wanted(job)
            or not (run_dir / "predictions.csv").is_file()}
    if todo:
        cohorts = {job.config.data for job in todo.values()}
        if len(cohorts) != 1:
            raise KitError(f"Flower runs of one call must read one cohort, got "
                           f"{sorted(cohorts)}")
        first = next(iter(todo.values())).config
        # the sites share the workspace's prefix cache: one machine, and the in-process runs
        # of notebook 04 already hold every site's frozen-prefix features
        with localhost_sites(Path(first.data), n_clients,
                             work_dir=flower_sites_dir(next(iter(todo))),
                             cache_dir=Path(first.cache_dir) if first.cache_dir else None
                             ) as sites:
            submitted = {}
            for run_dir, job in todo.items():
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                settings = FlowerSettings(dp_noise_multiplier=float(job.dp_noise_multiplier),
                                          dp_clipping_norm=float(job.dp_clipping_norm))
                submitted[run_dir] = sites.submit(job.config, run_dir, settings=settings,
                                                  tag=run_dir.name)
            for run_dir, run in submitted.items():
                run.wait(timeout)
                write_marker(run_dir / FLOWER_RUN_MARKER, wanted(todo[run_dir]))
    return {run_dir: run_dir for run_dir in runs}


def ensure_flower_run(run_dir: Path, config: TrainConfig, n_clients: int, *,
                      dp_noise_multiplier: float = 0.0, dp_clipping_norm: float = 1.0,
                      timeout: float = 3600.0) -> Path:
    """``ensure_flower_runs`` of one run."""
    job = FlowerJob(config, dp_noise_multiplier, dp_clipping_norm)
    return ensure_flower_runs({Path(run_dir): job}, n_clients, timeout=timeout)[Path(run_dir)]


def flower_site_files(run_dir: Path) -> pd.DataFrame:
    """What each local site kept on its own disk for the Flower run in ``run_dir``."""
    from duallora.flower.localhost.run import site_files
    from duallora.flower.server_app import recorded_run_key

    run_key = recorded_run_key(run_dir)
    if run_key is None:
        raise KitError(f"{run_dir} holds no Flower run (no flower/flower.json)")
    return site_files(flower_sites_dir(run_dir), run_key)


def existing_runs(ws: Workspace, names: Iterable[str]) -> dict[str, Path]:
    """Runs of ``names`` already finished in this workspace (notebook 04 reuses 03's)."""
    return {name: ws.runs / name for name in names
            if (ws.runs / name / RUN_MARKER).is_file()}


# -- foundation model ------------------------------------------------------------------------
def foundation_model(size: str = "tutorial", weights: str | Path | None = None, seed: int = 0):
    """``(model, description)``: CineMA-format weights when given, else the committed phantom
    FM, else (only while this checkout has no phantom FM) a random init, said so plainly."""
    from duallora.model import build_convvit, load_foundation_model, load_phantom_fm

    if weights:
        model = load_foundation_model(weights, size=size, seed=seed)
        return model, f"weights from {Path(weights).name} (size {size})"
    if phantom_fm_available(size):
        return load_phantom_fm(size, seed=seed), f"committed phantom FM ({size})"
    return (build_convvit(size, seed=seed),
            f"random init ({size}): no committed phantom FM in this checkout yet")


def cohort_images(harmonized: Path, size: str = "tutorial"):
    """``(x (N, 2, H, W, D), metadata)`` at the input size of model preset ``size``."""
    from duallora.data import load_cohort_arrays
    from duallora.model import PRESETS

    cfg = PRESETS[size]
    return load_cohort_arrays(harmonized, image_size=cfg.image_size, crop_size=cfg.crop_size)


def cohort_features(model, images, batch_size: int = 16):
    """Pooled features ``model.embed`` of every subject, ``(N, d)`` numpy, in batches."""
    import torch

    model.eval()
    with torch.no_grad():
        parts = [model.embed(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy()


def mae_demo(images, size: str = "tutorial", epochs: int = 2, seed: int = 0,
             max_subjects: int | None = None, progress: bool = True):
    """A short MAE pretraining run (the kit's CineMA recipe) on the cohort's ED and ES frames,
    to look at what the objective learns; returns ``(mae, loss log)``. The committed phantom FM
    comes from the same code run for longer on a separate population cohort."""
    from duallora.model.pretrain import PretrainConfig, train_mae

    images = images[:max_subjects] if max_subjects else images
    frames = images.reshape(-1, 1, *images.shape[2:]).float().contiguous()
    cfg = PretrainConfig(size=size, epochs=epochs, seed=seed, warmup_epochs=min(1, epochs))
    return train_mae(frames, cfg, progress=progress)


def mae_reconstructions(mae, images, mask_ratio: float = 0.75, seed: int = 0):
    """``(original, masked, reconstruction)``, each ``(N, 1, H, W, D)``: one ED frame per
    subject, the same random 75% of tokens hidden, and the MAE's painting of them."""
    import torch

    from duallora.model.layers import patchify, unpatchify
    from duallora.model.mae import random_token_mask

    frames = images[:, :1].float().contiguous()
    gen = torch.Generator().manual_seed(seed)
    removed = random_token_mask(len(frames), mae.n_tokens, mask_ratio, gen)
    mae.eval()
    recon = mae.reconstruct(frames, removed)
    patches = patchify(frames, mae.patch).clone()
    patches[removed] = 0.0
    masked = unpatchify(patches, mae.patch, mae.config.grid_size)
    return frames.numpy(), masked.numpy(), recon.numpy()


# -- the runs of notebooks 03 and 04 ---------------------------------------------------------
BASELINES = ("single_site", "centralized", "fedavg_full", "fedavg_lora", "ffa_lora", "fedsa_lora")
# the personalized-FL baselines (issue 18), kept apart so the runs above keep their configs
PERSONALIZED_BASELINES = ("fedper", "fedavg_lora_ft", "feddpa")
# two personalization methods beside Med-DualLoRA that notebook 04 compares (issue 43)
DUAL_VARIANTS = ("orthogonal_duallora", "fedalt")


def _common(rounds: int | None, blocks: str, rank: int) -> dict[str, Any]:
    values: dict[str, Any] = {"blocks": blocks, "rank": rank, "local_rank": rank,
                              "alpha": 2.0 * rank, "local_alpha": 2.0 * rank}
    if rounds is not None:
        values["rounds"] = int(rounds)
    return values


def strategy_specs(names: Iterable[str] = BASELINES, rounds: int | None = None,
                   blocks: str = "last2", rank: int = 4) -> dict[str, dict[str, Any]]:
    """One run per strategy with the same settings (notebooks 03 and 04 share these runs)."""
    return {name: {"strategy": name, **_common(rounds, blocks, rank)} for name in names}


FRAME_STRATEGIES = ("med_duallora", "fedavg_lora", "centralized")


def frame_specs(modes: Iterable[str] = ("per-frame", "trainable-stem"),
                strategies: Iterable[str] = FRAME_STRATEGIES, rounds: int | None = None,
                rank: int = 4) -> dict[str, dict[str, Any]]:
    """The frame-handling ablation: each strategy under each non-default ``--frames`` mode
    (``repeat``, the default, is the strategy's main run: ``strategy_specs``)."""
    return {f"{name}_{mode}": {"strategy": name, **_common(rounds, "last2", rank),
                               "frames": mode}
            for name in strategies for mode in modes}


def ablation_specs(ranks: Iterable[int] = (2, 8), holdout_vendor: str = "Canon",
                   holdout_baselines: Iterable[str] = ("fedavg_lora",),
                   rounds: int | None = None, rank: int = 4) -> dict[str, dict[str, Any]]:
    """Med-DualLoRA variants: all blocks, other ranks, private head; and the held-out vendor
    runs (Med-DualLoRA and the given baselines never see ``holdout_vendor``)."""
    base = {"strategy": "med_duallora", **_common(rounds, "last2", rank)}
    specs = {"med_duallora_all_blocks": {**base, "blocks": "all"},
             "med_duallora_private_head": {**base, "head": "private"}}
    for r in ranks:
        if r != rank:
            specs[f"med_duallora_r{r}"] = {**base, **_common(rounds, "last2", r)}
    if holdout_vendor:
        specs[f"med_duallora_holdout_{holdout_vendor}"] = {**base,
                                                           "holdout_vendor": holdout_vendor}
        for name in holdout_baselines:
            specs[f"{name}_holdout_{holdout_vendor}"] = {
                "strategy": name, **_common(rounds, "last2", rank),
                "holdout_vendor": holdout_vendor}
    return specs


# -- the benchmark (notebook 04) -------------------------------------------------------------
def ensure_benchmark(ws: Workspace, out_dir: str | Path, progress: bool = True
                     ) -> dict[str, Any]:
    """The benchmark's result for this mode: plan ``demo`` at the tutorial default; in quick
    mode the ``test`` plan (tiny cohorts, the tests' model) with the demo plan's arms (no
    all-blocks run, which skips the prefix cache and costs about three ordinary runs;
    ``tests/test_benchmark.py`` runs the whole ``test`` plan). Built under
    ``ws.root/benchmark`` (or ``$DUALLORA_BENCHMARK_DATA``: ``shared_data_dir``) and reported
    into ``out_dir/benchmark``; finished runs are reused."""
    from dataclasses import replace

    from duallora.benchmark import get_plan, run_benchmark, shared_data_dir

    plan = replace(get_plan("test"), runs=get_plan("demo").runs) if ws.quick else get_plan("demo")
    return run_benchmark(plan, shared_data_dir(ws.root / "benchmark"), Path(out_dir) / "benchmark",
                         progress=progress, command=f"notebook 04 (plan {plan.name})")

