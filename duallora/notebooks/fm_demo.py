"""The foundation model in the notebooks (notebook 02): load it, embed a cohort, a short MAE.

``duallora.notebooks.experiments`` re-exports all of it.
"""

from __future__ import annotations

from pathlib import Path


def phantom_fm_available(size: str = "tutorial") -> bool:
    from duallora.model import phantom_fm_path

    return phantom_fm_path(size).is_file()


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
