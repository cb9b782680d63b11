"""Build-or-reuse the data and the training runs that the notebooks share.

Every notebook receives the same ``data_dir``; this module gives it one folder per mode
(``data_dir/quick`` and ``data_dir/full``) holding the phantom cohort in its raw layouts, the
harmonized cohort, the prefix-feature cache and every training run. Each step leaves a small
JSON marker when it finishes, so the next notebook (or the next ``make demo``) reuses the result
instead of computing it again, and a changed setting (scale, seed, run configuration) redoes it.

Notebooks call only these functions; the algorithms live in ``data_prep`` and
``duallora.federated``; finished runs are read back with ``duallora.results.run_reader``. The
workspace and its cohort (``workspace``), the Flower runs (``flower_runs``) and the foundation
model's demo (``fm_demo``) are modules of their own, re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from duallora.federated.reuse import RUN_MARKER  # re-exported: notebooks, tests
from duallora.notebooks.flower_runs import (  # re-exported: notebook 05
    FLOWER_RUN_MARKER,
    FlowerJob,
    ensure_flower_run,
    ensure_flower_runs,
    flower_cohort,
    flower_site_files,
    flower_sites_dir,
)
from duallora.notebooks.fm_demo import (  # re-exported: notebook 02
    cohort_features,
    cohort_images,
    foundation_model,
    mae_demo,
    mae_reconstructions,
    phantom_fm_available,
)
from duallora.notebooks.workspace import (  # re-exported: every notebook
    COHORT_MARKER,
    FULL_SCALE,
    PHANTOM_MARKER,
    QUICK_SCALE,
    Workspace,
    cohort_is_ready,
    dataset_roots,
    ensure_cohort,
    ensure_phantoms,
    intensity_samples,
    subject_records,
    workspace,
)

__all__ = [
    "BASELINES", "COHORT_MARKER", "DUAL_VARIANTS", "FLOWER_RUN_MARKER", "FRAME_STRATEGIES",
    "FULL_SCALE", "PERSONALIZED_BASELINES", "PHANTOM_MARKER", "QUICK_SCALE", "RUN_MARKER",
    "FlowerJob", "Workspace", "ablation_specs", "cohort_features", "cohort_images",
    "cohort_is_ready", "dataset_roots", "ensure_benchmark", "ensure_cohort",
    "ensure_flower_run", "ensure_flower_runs", "ensure_phantoms", "ensure_run", "ensure_runs",
    "existing_runs", "flower_cohort", "flower_site_files", "flower_sites_dir", "fm_description",
    "foundation_model", "frame_specs", "intensity_samples", "mae_demo", "mae_reconstructions",
    "phantom_fm_available", "strategy_specs", "subject_records", "train_config",
    "workspace",
]


# -- training runs ---------------------------------------------------------------------------
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


def existing_runs(ws: Workspace, names: Iterable[str]) -> dict[str, Path]:
    """Runs of ``names`` already finished in this workspace (notebook 04 reuses 03's)."""
    return {name: ws.runs / name for name in names
            if (ws.runs / name / RUN_MARKER).is_file()}


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

