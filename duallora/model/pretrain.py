"""MAE pretraining of the ConvViT encoder on a harmonized cohort (CineMA's recipe, CPU-sized).

Like CineMA, every ED and every ES volume is a separate one-frame sample, 75% of the tokens are
hidden, and the model learns to paint the hidden 16x16x1 patches back. Labels are never read:
the cohort is the unlabelled "population" (CineMA used UK Biobank, not its fine-tuning sites).
Optimiser and schedule follow CineMA's config (AdamW, betas 0.9/0.95, weight decay 0.05, linear
warm-up then cosine decay, gradient clipping at 5); only the scale differs.

Outputs, next to ``out`` (``weights.safetensors``): the encoder in CineMA's MAE checkpoint
layout (header: preset and format), ``weights.json`` (how it was made), ``weights_loss.csv``
(loss per step) and ``weights_loss.png`` (the curve).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm.auto import tqdm

from duallora.errors import KitError
from duallora.model.checkpoints import encoder_state, save_weights
from duallora.model.foundation import MAE_ENCODER_FORMAT
from duallora.model.mae import MaskedAutoencoder, slab_token_mask
from duallora.model.presets import ConvViTConfig, get_preset


@dataclass(frozen=True)
class PretrainConfig:
    size: str = "tutorial"
    epochs: int = 3
    seed: int = 0
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 1
    weight_decay: float = 0.05
    clip_grad: float = 5.0
    mask_ratio: float = 0.75
    mask_slab: int = 1  # slices hidden together (1: CineMA's per-token masking)
    max_shift: int = 4  # random in-plane translation (pixels), CineMA also translates
    dec_dim: int = 64
    dec_depth: int = 2
    dec_heads: int = 4
    norm_target: bool = False
    image_size: tuple[int, int, int] | None = None  # None: the preset's (tests use smaller)

    def preset(self) -> ConvViTConfig:
        return get_preset(self.size).with_overrides(image_size=self.image_size)


def load_frames(data_dir: Path, cfg: PretrainConfig) -> torch.Tensor:
    """All ED and ES volumes of a harmonized cohort as one-frame samples (N, 1, H, W, D)."""
    from duallora.data import load_cohort_arrays

    preset = cfg.preset()
    x, _ = load_cohort_arrays(data_dir, image_size=preset.image_size,
                              crop_size=preset.crop_size)
    if len(x) == 0:
        raise KitError(f"{data_dir}: the harmonized cohort has no subjects to pretrain on")
    return x.reshape(-1, 1, *x.shape[2:]).float().contiguous()


def random_shift(batch: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each volume in-plane by up to ``max_shift`` pixels (circularly)."""
    if max_shift <= 0:
        return batch
    shifts = torch.randint(-max_shift, max_shift + 1, (len(batch), 2), generator=gen)
    return torch.stack([torch.roll(v, shifts=(int(dx), int(dy)), dims=(1, 2))
                        for v, (dx, dy) in zip(batch, shifts, strict=True)])


def lr_at(step: int, total: int, warmup: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``min_lr``."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def build_mae(cfg: PretrainConfig) -> MaskedAutoencoder:
    preset = cfg.preset().with_overrides(n_frames=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return MaskedAutoencoder(preset, cfg.dec_dim, cfg.dec_depth, cfg.dec_heads,
                                 norm_target=cfg.norm_target)


EpochHook = Callable[[int, MaskedAutoencoder], None]


def train_mae(frames: torch.Tensor, cfg: PretrainConfig, progress: bool = True,
              device: str = "cpu", on_epoch_end: EpochHook | None = None,
              precision: str = "fp32") -> tuple[MaskedAutoencoder, list[dict]]:
    """Train the MAE; returns it (on the CPU) and one log row per optimisation step.

    Shuffling, shifts and masks are drawn on the CPU from the seed whatever ``device`` is, so a
    GPU run sees the same batches and masks as a CPU run (only float rounding differs).
    ``on_epoch_end(epoch, model)`` runs after every epoch (snapshots, probes); it must leave the
    model as it found it (on ``device``, parameters untouched) so training is not perturbed.
    ``device`` takes ``auto`` like ``duallora train``; ``precision`` (fp32, bf16, fp16) is the
    autocast of the forward pass; weights and AdamW state stay fp32 (``federated.device``).
    """
    from duallora.federated.device import (
        OptimizerStep,
        autocast,
        configure_determinism,
        resolve_device,
    )

    target = resolve_device(device)
    configure_determinism(target, precision)
    model = build_mae(cfg).to(target)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=cfg.lr, betas=(0.9, 0.95))
    optimizer_step = OptimizerStep(optim, target, precision, cfg.clip_grad,
                                   list(model.parameters()))
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(frames) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = min(total, steps_per_epoch * cfg.warmup_epochs)
    log: list[dict] = []
    model.train()
    bar = tqdm(total=total, desc="MAE pretraining", unit="step", disable=not progress)
    step = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(frames), generator=gen)
        for start in range(0, len(frames), cfg.batch_size):
            batch = random_shift(frames[order[start:start + cfg.batch_size]], cfg.max_shift, gen)
            removed = slab_token_mask(len(batch), model.config.grid_size, cfg.mask_ratio,
                                      cfg.mask_slab, gen)
            lr = lr_at(step, total, warmup, cfg)
            for group in optim.param_groups:
                group["lr"] = lr
            with autocast(target, precision):
                loss, _ = model(batch.to(target), removed.to(target))
            optimizer_step(loss.float())
            value = loss.item()
            log.append({"step": step, "epoch": epoch, "lr": lr, "loss": value})
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.4f}")
            step += 1
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
            model.train()
    bar.close()
    return model.cpu(), log


def write_loss_curve(log: list[dict], csv_path: Path, png_path: Path) -> None:
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "epoch", "lr", "loss"])
        writer.writeheader()
        writer.writerows(log)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], lw=0.8, alpha=0.5, label="step")
    means = epoch_mean_losses(log)
    ends = [max(r["step"] for r in log if r["epoch"] == e) for e in means]
    ax.plot(ends, list(means.values()), marker="o", ms=3, label="epoch mean")
    ax.set(xlabel="optimisation step", ylabel="masked-patch MSE", title="MAE pretraining loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def epoch_mean_losses(log: list[dict]) -> dict[int, float]:
    """Mean loss of each epoch, in epoch order (less noisy than single steps)."""
    sums: dict[int, list[float]] = {}
    for row in log:
        sums.setdefault(row["epoch"], []).append(row["loss"])
    return {epoch: sum(values) / len(values) for epoch, values in sorted(sums.items())}


def final_loss(log: list[dict]) -> float:
    """Mean loss over the last epoch (less noisy than the last step)."""
    return epoch_mean_losses(log)[log[-1]["epoch"]]


def pretrain(data_dir: Path, out: Path, cfg: PretrainConfig, *, command: str = "",
             data_info: dict | None = None, progress: bool = True, device: str = "cpu",
             precision: str = "fp32") -> dict:
    """Pretrain on ``data_dir`` and write the weights, loss curve and metadata record."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise KitError(f"--out must end with .safetensors, got {out}")
    started = time.perf_counter()
    frames = load_frames(Path(data_dir), cfg)
    from duallora.federated.device import resolve_device

    target = resolve_device(device)
    model, log = train_mae(frames, cfg, progress=progress, device=str(target),
                           precision=precision)
    wall = time.perf_counter() - started
    header = {"format": MAE_ENCODER_FORMAT, "size": cfg.size, "seed": cfg.seed,
              "image_size": ",".join(map(str, cfg.preset().image_size))}
    save_weights(encoder_state(model), out, header)
    write_loss_curve(log, out.with_name(out.stem + "_loss.csv"),
                     out.with_name(out.stem + "_loss.png"))
    record = {
        "command": command,
        "config": asdict(cfg),
        "data": {"n_volumes": len(frames), "n_subjects": len(frames) // 2, **(data_info or {})},
        "final_loss": round(final_loss(log), 6),
        "first_epoch_loss": round(epoch_mean_losses(log)[0], 6),
        "steps": len(log),
        "wall_time_s": round(wall, 1),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu",
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "format": MAE_ENCODER_FORMAT,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record
