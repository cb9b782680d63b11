"""Repeated timings summarized as median and spread, and the process's peak memory.

Shared machines make single timings noisy, so every figure the benchmarks report is the median
of several repeats taken after untimed warm-up calls, with the inter-quartile range and the
extremes alongside, so a reader can judge how much to trust it.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Summary of repeated wall-clock measurements, in seconds."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int
    warmup: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, unit: str = "s", scale: float = 1.0) -> str:
        """``1.23 s [1.20-1.31]`` (median [IQR]), or the single value when n == 1."""
        median = self.median * scale
        if self.n < 2:
            return f"{median:.3g} {unit} (n=1)"
        return f"{median:.3g} {unit} [{self.q1 * scale:.3g}-{self.q3 * scale:.3g}]"


def summarize(samples: list[float], warmup: int = 0) -> Timing:
    """Median, quartiles and extremes of ``samples`` (at least one)."""
    if not samples:
        raise ValueError("no timing samples to summarize")
    values = np.asarray(samples, dtype=np.float64)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return Timing(float(median), float(q1), float(q3), float(values.min()),
                  float(values.max()), len(samples), warmup)


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call of ``fn`` takes, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat_timing(fn: Callable[[], Any], repeats: int, warmup: int = 1,
                  before: Callable[[], Any] | None = None,
                  sync: Callable[[], Any] | None = None) -> tuple[Timing, Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    ``before`` runs untimed before every call (e.g. resetting state); ``sync`` runs inside the
    timed region after ``fn`` (e.g. ``torch.cuda.synchronize`` so GPU work is counted).
    Returns the summary and the last result.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    result = None
    samples = []
    for index in range(warmup + repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        elapsed = time.perf_counter() - start
        if index >= warmup:
            samples.append(elapsed)
    return summarize(samples, warmup), result


def interleaved_timing(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                       sync: Callable[[], Any] | None = None
                       ) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Time several variants back to back (A, B, C, A, B, C, ...), so that a change in machine
    load affects all of them alike; ratios of the medians are then fair."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for index in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            if sync is not None:
                sync()
            elapsed = time.perf_counter() - start
            if index >= warmup:
                samples[name].append(elapsed)
    return {name: summarize(values, warmup) for name, values in samples.items()}, results


def peak_rss_bytes() -> int:
    """Highest resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()
