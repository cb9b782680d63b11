"""The committed phantom foundation model: it loads, it helps, and it runs on real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from duallora.data import centre_crop, load_cohort_arrays, load_real_sample, resize
from duallora.model import build_convvit, load_phantom_fm, phantom_fm_info, phantom_fm_path
from duallora.model.checkpoints import read_metadata
from duallora.model.probe import embed_all, mean_probe_scores

SIZE = "tutorial"
FOLD_SEEDS = (0, 1, 2)
RANDOM_SEEDS = (0, 1, 2)


def test_committed_fm_exists_with_its_record() -> None:
    path = phantom_fm_path(SIZE)
    assert path.is_file(), "the tutorial phantom FM must be committed in duallora/weights/"
    assert path.stat().st_size < 8 * 2**20
    info = phantom_fm_info(SIZE)
    for key in ("command", "config", "data", "final_loss", "date", "sha256"):
        assert key in info
    assert info["config"]["mask_ratio"] == 0.75 and info["config"]["size"] == SIZE
    assert info["final_loss"] < info["first_epoch_loss"]
    assert read_metadata(path)["size"] == SIZE


@pytest.mark.xfail(strict=True, reason=(
    "known open problem (issue 4, docs/PHANTOM_FM.md): no MAE recipe tried beats random init "
    "under the linear probe; on an independent 430-subject cohort the committed FM scores AUC "
    "0.59 (pooled) vs random 0.63-0.68, and 12 longer or differently masked GPU runs 0.55-0.64. "
    "strict: passing here must be noticed"))
def test_fm_beats_random_init_under_the_same_linear_probe(harmonized_dir: Path) -> None:
    preset = build_convvit(SIZE).config
    x, frame = load_cohort_arrays(harmonized_dir, image_size=preset.image_size,
                                  crop_size=preset.crop_size)
    labels = frame["label"].to_numpy()

    def probe_auc(model: torch.nn.Module) -> float:
        return mean_probe_scores(embed_all(model, x), labels, FOLD_SEEDS)[0]

    fm_auc = probe_auc(load_phantom_fm(SIZE, seed=0))
    random_aucs = [probe_auc(build_convvit(SIZE, seed=seed)) for seed in RANDOM_SEEDS]
    print(f"linear probe (n={len(labels)}): phantom FM AUC {fm_auc:.3f}; random init AUC "
          + ", ".join(f"{auc:.3f}" for auc in random_aucs))
    assert fm_auc > float(np.mean(random_aucs))


def test_fm_gives_finite_logits_on_real_samples(real_samples_dir: Path) -> None:
    model = load_phantom_fm(SIZE).eval()
    cfg = model.config
    samples = sorted(p for p in real_samples_dir.iterdir() if p.is_dir())
    assert samples, f"no sample folders in {real_samples_dir}"
    batch = []
    for folder in samples:
        pair = load_real_sample(folder).numpy()
        cropped = np.stack([centre_crop(frame, cfg.crop_size) for frame in pair])
        batch.append(resize(cropped, cfg.image_size))
    x = torch.from_numpy(np.stack(batch)).float()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (len(samples), 2)
    assert torch.isfinite(logits).all()


@pytest.mark.needs_shared
def test_real_samples_run_through_the_full_size_base_geometry(real_samples_dir: Path) -> None:
    """A real 192x192x16 pair through CineMA's exact input geometry (tiny widths keep it cheap)."""
    model = build_convvit("tiny", seed=0).eval()
    x = load_real_sample(sorted(p for p in real_samples_dir.iterdir() if p.is_dir())[0])
    with torch.no_grad():
        logits = model(x[None].float())
    assert torch.isfinite(logits).all()
