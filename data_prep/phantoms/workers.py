"""Render subjects in worker processes with a progress bar; results come back in task order.

Every subject is drawn from its own seed, so the files and rows do not depend on the number of
workers; only the wall time does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from duallora.errors import KitError


def map_in_order(work: Callable[[Any], Any], tasks: Sequence[Any], workers: int | None,
                 desc: str, chunksize: int = 1, *, progress: bool = True,
                 mp_context: Any = None, initializer: Callable[[], None] | None = None
                 ) -> list[Any]:
    """``[work(t) for t in tasks]``, in up to ``workers`` processes (default: every core);
    ``mp_context`` and ``initializer`` go to the process pool, ``progress=False`` hides the bar."""
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    results = []
    with tqdm(total=len(tasks), desc=desc, unit="subject", disable=not progress) as bar:
        if n_workers == 1:
            for task in tasks:
                results.append(work(task))
                bar.update(1)
            return results
        with ProcessPoolExecutor(n_workers, mp_context=mp_context,
                                 initializer=initializer) as pool:
            for result in pool.map(work, tasks, chunksize=chunksize):
                results.append(result)
                bar.update(1)
    return results


def harmonize_in_order(work: Callable[[Any], Any], tasks: Sequence[Any], workers: int | None,
                       desc: str, progress: bool = True, chunksize: int = 2) -> list[Any]:
    """``map_in_order`` for jobs that render and harmonize in memory (the fast paths).

    ``data_prep.preprocess`` (torch, MONAI) is imported once here and inherited by forked
    workers, each limited to one torch thread; ``progress=False`` hides the bar.
    """
    import multiprocessing as mp

    from data_prep.harmonize import one_torch_thread

    if tasks:
        import data_prep.preprocess  # noqa: F401  (loaded once, inherited by forked workers)
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    return map_in_order(work, tasks, workers, desc, chunksize, progress=progress,
                        mp_context=context, initializer=one_torch_thread)


def harmonized_rows(out: Path, results: list[Any], what: str) -> pd.DataFrame:
    """The fast paths' results as rows sorted by subject (``split`` still to set); every
    ``Skip`` goes to ``out/skipped.csv``, and no row at all raises ``KitError``."""
    from data_prep.harmonize import SKIPPED_COLUMNS, _write_text_atomic
    from data_prep.records import Skip

    rows = [r for r in results if isinstance(r, dict)]
    skips = [r for r in results if isinstance(r, Skip)]
    skipped = pd.DataFrame([s.__dict__ for s in skips], columns=SKIPPED_COLUMNS)
    _write_text_atomic(Path(out) / "skipped.csv", skipped.to_csv(index=False))
    if not rows:
        raise KitError(f"{out}: no {what} could be harmonized ({len(skips)} skipped)")
    return pd.DataFrame(rows).sort_values("subject_id").reset_index(drop=True)
