"""Render subjects in worker processes with a progress bar; results come back in task order.

Every subject is drawn from its own seed, so the files and rows do not depend on the number of
workers; only the wall time does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm.auto import tqdm


def map_in_order(work: Callable[[Any], Any], tasks: Sequence[Any], workers: int | None,
                 desc: str, chunksize: int = 1) -> list[Any]:
    """``[work(t) for t in tasks]``, in up to ``workers`` processes (default: every core)."""
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    results = []
    with tqdm(total=len(tasks), desc=desc, unit="subject") as bar:
        if n_workers == 1:
            for task in tasks:
                results.append(work(task))
                bar.update(1)
            return results
        with ProcessPoolExecutor(n_workers) as pool:
            for result in pool.map(work, tasks, chunksize=chunksize):
                results.append(result)
                bar.update(1)
    return results
