"""Runs trained side by side (``ensure_all_trained``): the same files as one after another,
finished runs left alone, and a failing run named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.federated.reuse import RUN_MARKER, ensure_all_trained

RUN_FILES = ("metrics.csv", "predictions.csv", "comm.jsonl")


def _config(data: Path, cache: Path, seed: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "data": str(data), "fm": "none", "model_size": "test-tiny", "rounds": 2,
        "local_epochs": 1, "bootstrap": 20, "max_train_per_client": 8, "cache_dir": str(cache),
        "strategy": "med_duallora", "seed": seed})


def test_side_by_side_runs_equal_sequential_runs_and_are_reused(harmonized_dir: Path,
                                                                tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    configs = [_config(harmonized_dir, cache, seed) for seed in (0, 1)]
    apart = ensure_all_trained([(c, tmp_path / "apart" / f"s{c.seed}") for c in configs],
                               workers=2, progress=False)
    alone = ensure_all_trained([(c, tmp_path / "alone" / f"s{c.seed}") for c in configs],
                               workers=1, progress=False)
    for a, b in zip(apart, alone, strict=True):
        assert (a / RUN_MARKER).is_file()
        for name in RUN_FILES:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (a, name)
    assert (apart[0] / "metrics.csv").read_bytes() != (apart[1] / "metrics.csv").read_bytes()
    stamps = [(f / "metrics.csv").stat().st_mtime_ns for f in apart]
    assert ensure_all_trained([(c, tmp_path / "apart" / f"s{c.seed}") for c in configs],
                              workers=2, progress=False) == apart
    assert [(f / "metrics.csv").stat().st_mtime_ns for f in apart] == stamps  # not retrained


def test_a_failing_run_is_named(harmonized_dir: Path, tmp_path: Path) -> None:
    good = _config(harmonized_dir, tmp_path / "cache", 0)
    bad = TrainConfig.from_dict({**json.loads(good.to_json()), "data": str(tmp_path / "missing")})
    with pytest.raises(KitError, match="bad_run"):
        ensure_all_trained([(good, tmp_path / "good_run"), (bad, tmp_path / "bad_run")],
                           workers=2, progress=False)
