"""Train a configuration into a folder once; later calls with the same configuration reuse it.

Shared by the notebooks' workspace (``duallora.notebooks.experiments``) and the benchmark
(``duallora.benchmark``). A finished run leaves ``kit_run.json`` holding its configuration;
an interrupted run with the same configuration is resumed (bit-identical to an uninterrupted
one); a run with another configuration is replaced. LoRA strategies also log adapter norms per
round (``adapter_norms.csv``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

from duallora.base.config import TrainConfig
from duallora.base.markers import is_built, read_marker, write_marker
from duallora.base.rundir import RunDir
from duallora.errors import KitError

RUN_MARKER = "kit_run.json"


def is_finished(config: TrainConfig, out: Path) -> bool:
    return is_built(Path(out) / RUN_MARKER, {"config": json.loads(config.to_json())},
                    RunDir(out).metrics)


def ensure_trained(config: TrainConfig, out: Path, *, progress: bool = True) -> Path:
    """Train ``config`` into ``out`` unless the same configuration finished there."""
    from duallora.federated.loop import run_training
    from duallora.federated.norm_logger import NormLogger

    out = Path(out)
    if is_finished(config, out):
        return out
    wanted = json.loads(config.to_json())
    resume = read_marker(RunDir(out).config) == wanted
    if out.exists() and not resume:
        shutil.rmtree(out)
    logger = NormLogger(out, config)
    if not resume:
        logger.reset()
    run_training(config, out, resume=resume, progress=progress, after_round=logger)
    write_marker(out / RUN_MARKER, {"config": wanted})
    return out


def default_workers() -> int:
    """How many runs train side by side: ``DUALLORA_JOBS``, else one per core."""
    value = os.environ.get("DUALLORA_JOBS", "")
    try:
        return max(1, int(value)) if value else max(1, os.cpu_count() or 1)
    except ValueError:
        raise KitError(f"DUALLORA_JOBS={value!r}: expected a whole number of runs") from None


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train on one torch thread, whatever else runs: a run's numbers then never depend on how
    many runs share the machine (float sums are ordered by the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_in_worker(config: TrainConfig, out: Path, progress: bool = False) -> Path:
    with one_torch_thread():
        return ensure_trained(config, out, progress=progress)


def ensure_all_trained(jobs: Sequence[tuple[TrainConfig, Path]], *, workers: int | None = None,
                       progress: bool = True, desc: str = "runs") -> list[Path]:
    """``ensure_trained`` for every ``(config, folder)``, up to ``workers`` side by side.

    Small models use a second core poorly inside one run, so separate runs on separate cores
    finish sooner: each missing run trains in a worker process on one torch thread (also when
    ``workers`` is 1, so the numbers are the same either way). Finished runs are not started.
    Returns the folders in ``jobs`` order; a failed run raises ``KitError`` naming its folder.
    """
    from tqdm.auto import tqdm

    folders = [Path(out) for _, out in jobs]
    todo = [k for k, (config, out) in enumerate(jobs) if not is_finished(config, Path(out))]
    workers = min(workers or default_workers(), len(todo))
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run",
              disable=not progress) as bar:
        if workers <= 1:
            for k in todo:
                _train_in_worker(jobs[k][0], folders[k], progress)
                bar.update(1)
            return folders
        context = mp.get_context("spawn")  # a fresh interpreter: no forked OpenMP or kernel state
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_train_in_worker, jobs[k][0], folders[k]): k for k in todo}
            try:
                for future in as_completed(futures):
                    try:
                        future.result()
                    except Exception as err:
                        raise KitError(f"training {folders[futures[future]]} failed: "
                                       f"{type(err).__name__}: {err}") from err
                    bar.update(1)
            except BaseException:  # a failure or Ctrl-C: start nothing more
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return folders
