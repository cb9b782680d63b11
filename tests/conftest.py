"""Shared fixtures: the ``../shared`` folder and a small harmonized phantom cohort (built once)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from duallora import paths  # noqa: E402

# Small enough to build in well under a minute on two cores, large enough to hold every vendor
# and both labels in every federated split (phantoms keep >= 3 per vendor and label: ~31 subjects).
TEST_COHORT_SCALE = 0.03
TEST_COHORT_SEED = 0


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``../shared`` folder; tests needing it skip (with the reason) when absent."""
    found = paths.shared_dir()
    if found is None:
        pytest.skip("../shared is not present beside the repository (real samples and CineMA "
                    "manifests live there)")
    return found


@pytest.fixture(scope="session")
def real_samples_dir(shared_dir: Path) -> Path:
    found = paths.real_samples_dir()
    if found is None:
        pytest.skip("../shared/data/real-samples is missing")
    return found


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    found = paths.reference_dir()
    if found is None:
        pytest.skip("../shared/reference is missing")
    return found


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str,
               build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per pytest run: under ``make test``'s xdist workers the first
    worker builds it in the run's shared temp folder and the others wait, then reuse it."""
    from duallora.base.markers import build_once

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # every worker's basetemp lives here
    target = base / name

    def fill() -> None:
        target.mkdir(parents=True)
        build(target)

    # the marker stays out of the folder (the v1 byte-identity hash reads the whole folder)
    build_once(target, {"built": name}, fill, marker=base / f"{name}.built")
    return target


@pytest.fixture(scope="session")
def phantom_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom cohort in the raw ACDC / M&Ms / M&Ms-2 layouts."""
    from data_prep.phantoms import write_phantom_cohort

    # v1, pinned: the federated-loop golden comparisons were measured on this cohort
    return built_once(tmp_path_factory, "phantoms", lambda out: write_phantom_cohort(
        out, scale=TEST_COHORT_SCALE, seed=TEST_COHORT_SEED, generator="v1"))


@pytest.fixture(scope="session")
def harmonized_dir(phantom_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small phantom cohort harmonized (metadata.csv + 192x192x16 volumes)."""
    from data_prep.harmonize import harmonize_datasets

    return built_once(tmp_path_factory, "harmonized", lambda out: harmonize_datasets(
        acdc=phantom_raw_dir / "ACDC" / "database", mnms=phantom_raw_dir / "MnM" / "OpenDataset",
        mnms2=phantom_raw_dir / "MnM2", out=out, seed=TEST_COHORT_SEED))


# The longest files (CPU time of each file run alone), longest first; then the other files
# holding slow tests, then the rest. xdist hands whole files to its workers in this order (with
# `--no-loadscope-reorder`, as `make test` runs it: by default xdist sorts files by their number
# of tests instead), so the long ones start early and the short ones fill in around them.
LONGEST_FIRST = ("test_model_fm.py", "test_flower_run.py", "test_benchmark.py",
                 "test_flower_baselines.py", "test_flower_faults.py", "test_notebook_browser.py",
                 "test_fed_loop.py", "test_data_phantoms_v2.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (item.path not in slow_files)

    items.sort(key=rank)  # stable: a file's own order is kept


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random one-frame test-tiny encoder weights, saved as pretraining saves an FM (the FM
    gate and image-headroom command tests read features through them)."""
    from duallora.model import build_convvit, save_weights
    from duallora.model.checkpoints import encoder_state

    model = build_convvit("test-tiny", n_frames=1, seed=7)
    return save_weights(encoder_state(model), tmp_path_factory.mktemp("fm") / "tiny.safetensors",
                        {"format": "cinema-mae-encoder", "size": "test-tiny"})
