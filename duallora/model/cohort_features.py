"""Frozen feature sets of a harmonized cohort, cached: FM, random init, raw pixels.

The FM gate and the image-level headroom probe the same three kinds of features of the ED+ES
model input (``load_cohort_arrays`` at a preset's image and crop size):

- ``fm``: the per-frame readout (``duallora.model.probe``) of one-frame FM weights;
- ``random``: the same readout of a randomly initialised one-frame ConvViT of the same preset
  (what the architecture gives without pretraining);
- ``pixels``: the benchmark's raw-pixel features (``duallora.benchmark.references``).

Embedding a thousand subjects takes minutes on a CPU, so each set is cached in a ``.npz`` keyed
by the cohort's ``metadata.csv`` digest and the feature key (weights sha256 or random seed):
re-running a report only refits probes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from duallora.errors import KitError

CACHE_VERSION = "1"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (names weights in cache keys and reports)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CohortInput:
    """A harmonized cohort's metadata (read now) and its ED+ES model input (N, 2, H, W, D) at
    a preset's image and crop size, loaded only when a feature set is not cached."""

    def __init__(self, root: str | Path, size: str, progress: bool = False) -> None:
        from duallora.data import read_metadata

        self.root, self.size, self.progress = Path(root), size, progress
        if not (self.root / "metadata.csv").is_file():
            raise KitError(f"--cohort {root}: no metadata.csv (not a harmonized cohort)")
        self.metadata: pd.DataFrame = read_metadata(self.root)
        self.subject_ids: list[str] = self.metadata["subject_id"].astype(str).tolist()
        self.labels: np.ndarray = self.metadata["label"].to_numpy(dtype=np.int64)
        self.vendors: np.ndarray = self.metadata["vendor"].astype(str).to_numpy()

    @functools.cached_property
    def x(self) -> torch.Tensor:
        from duallora.base.presets import get_preset
        from duallora.data import load_cohort_arrays

        preset = get_preset(self.size)
        x, frame = load_cohort_arrays(self.root, preset.image_size, crop_size=preset.crop_size,
                                      progress=self.progress)
        if frame["subject_id"].astype(str).tolist() != self.subject_ids:
            raise KitError(f"{self.root / 'metadata.csv'}: changed while it was read")
        return x

    def features(self, name: str, *, weights: str | Path | None = None, seed: int = 0,
                 cache_dir: str | Path | None = None) -> np.ndarray:
        """:func:`feature_set` of this cohort through the ``.npz`` cache of :func:`cached`."""
        key = feature_key(name, weights=weights, size=self.size, seed=seed)
        return cached(cache_dir, self.root, key, self.subject_ids,
                      lambda: feature_set(name, self.x, weights=weights, size=self.size,
                                          seed=seed, progress=self.progress))


def weights_size(weights: str | Path | None, default: str = "tutorial") -> str:
    """The preset recorded in a kit weights file's header (``default`` when none is)."""
    from duallora.model.checkpoints import read_metadata

    if weights is None:
        return default
    return read_metadata(weights).get("size") or default


def fm_model(weights: str | Path | None, size: str) -> torch.nn.Module:
    """The one-frame FM: ``weights`` or, when None, the kit's committed phantom FM."""
    from duallora.model.foundation import load_foundation_model, load_phantom_fm

    if weights is None:
        return load_phantom_fm(size, n_frames=1)
    if not Path(weights).is_file():
        raise KitError(f"--weights {weights}: no such file")
    return load_foundation_model(weights, size=size, n_frames=1)


def random_model(size: str, seed: int) -> torch.nn.Module:
    """A randomly initialised one-frame ConvViT of the preset (init ``seed``)."""
    from duallora.model.convvit import build_convvit

    return build_convvit(size, n_frames=1, seed=seed)


def fm_key(weights: str | Path | None, size: str) -> str:
    """Cache key of the FM features: the weights' sha256 (the committed file's when None)."""
    from duallora.model.foundation import phantom_fm_path

    path = phantom_fm_path(size) if weights is None else Path(weights)
    if not path.is_file():
        raise KitError(f"--weights {path}: no such file")
    return f"fm-{size}-{file_sha256(path)[:16]}"


def per_frame_features(model: torch.nn.Module, x: torch.Tensor,
                       progress: bool = False) -> np.ndarray:
    """ED and ES embedded separately by a one-frame model, concatenated (N, 2 * d)."""
    from duallora.model.probe import probe_features

    torch.manual_seed(0)  # nothing is random in eval mode; belt and braces for determinism
    return probe_features(model, x, "per_frame", progress=progress)


def pixel_features(x: torch.Tensor) -> np.ndarray:
    from duallora.model.probe import pixel_features as pooled_pixels

    return pooled_pixels(x)


def cohort_tag(cohort: str | Path) -> str:
    """Folder name plus the digest of its ``metadata.csv`` (a rewritten cohort gets a new tag)."""
    path = Path(cohort) / "metadata.csv"
    if not path.is_file():
        raise KitError(f"{path}: no such file (not a harmonized cohort)")
    return f"{Path(cohort).resolve().name}-{file_sha256(path)[:12]}"


def cached(cache_dir: str | Path | None, cohort: str | Path, key: str, subject_ids: list[str],
           compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` unless ``cache_dir`` holds this (cohort, key) for the same subjects."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{cohort_tag(cohort)}-{key}.npz"
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        if (str(stored["version"]) == CACHE_VERSION
                and stored["subject_id"].tolist() == list(subject_ids)):
            return stored["features"]
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, features=features, subject_id=np.array(subject_ids, dtype=str),
             version=np.array(CACHE_VERSION))
    partial.replace(path)
    return features


def feature_set(name: str, x: torch.Tensor, *, weights: str | Path | None = None,
                size: str = "tutorial", seed: int = 0, progress: bool = False) -> np.ndarray:
    """One feature set of the model input ``x``: ``fm``, ``random`` (init ``seed``) or
    ``pixels``."""
    if name == "pixels":
        return pixel_features(x)
    if name == "fm":
        return per_frame_features(fm_model(weights, size), x, progress)
    if name == "random":
        return per_frame_features(random_model(size, seed), x, progress)
    raise KitError(f"unknown feature set {name!r}; choose fm, random or pixels")


def feature_key(name: str, *, weights: str | Path | None = None, size: str = "tutorial",
                seed: int = 0) -> str:
    """The cache key of :func:`feature_set`'s arguments."""
    if name == "fm":
        return fm_key(weights, size)
    if name == "random":
        return f"random-{size}-seed{seed}"
    return f"pixels-{size}"
