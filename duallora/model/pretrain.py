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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm.auto import tqdm

from duallora.base.presets import ConvViTConfig, get_preset
from duallora.errors import KitError
from duallora.model.anatomy_head import (
    PooledTokens,
    anatomy_loss,
    build_head,
    standardize_areas,
)
from duallora.model.checkpoints import encoder_state, save_weights
from duallora.model.foundation import MAE_ENCODER_FORMAT
from duallora.model.mae import MaskedAutoencoder, slab_token_mask
from duallora.model.pretrain_checkpoint import (
    TrainState,
    check_settings,
    read_checkpoint,
    restore,
    save_checkpoint,
    settings,
)


@dataclass(frozen=True)
class PretrainConfig:
    size: str = "tutorial"
    epochs: int = 3
    seed: int = 0
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1  # may be a fraction; warm-up steps are rounded to a whole step
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
    anatomy_weight: float = 0.0  # > 0: add the per-slice area head's loss (frames population)

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


def as_float(batch: torch.Tensor) -> torch.Tensor:
    """A batch as float32 model input: uint8 frames (a frames population) are x 255."""
    if batch.is_floating_point():
        return batch
    return batch.to(torch.float32) / 255


@dataclass(frozen=True)
class Chunking:
    """How a run is cut into resumable chunks (``duallora.model.pretrain_checkpoint``)."""

    checkpoint: Path | None = None
    every: int = 0  # save every N steps (0: only when stopping and at the end)
    resume: bool = False
    stop_after_minutes: float | None = None
    started: float = field(default_factory=time.perf_counter)  # the chunk's clock starts here
    settings: dict = field(default_factory=dict)  # what a resumed run must match


@dataclass
class MaeRun:
    """A finished or stopped chunk of MAE pretraining."""

    model: MaskedAutoencoder  # on the CPU
    state: TrainState
    stopped: bool  # True: stopped early by ``stop_after_minutes``, checkpoint saved
    total_steps: int
    anatomy: dict | None  # the anatomy targets' standardization, when the head was trained


def _optimizer(model: MaskedAutoencoder, head: torch.nn.Module | None,
               cfg: PretrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if head is not None:  # only with --anatomy-weight: the pure MAE keeps its two groups
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _start_state(chunking: Chunking, modules: dict, gen: torch.Generator) -> TrainState:
    """A fresh state, or the checkpoint's when resuming (refused under other settings)."""
    path = chunking.checkpoint
    if chunking.resume:
        if path is None:
            raise KitError("--resume needs --checkpoint PATH")
        payload = read_checkpoint(path)
        check_settings(path, payload["settings"], chunking.settings)
        return restore(payload, modules, gen)
    if path is not None and Path(path).exists():
        raise KitError(f"--checkpoint {path}: already exists; add --resume to continue it or "
                       "remove it to start over")
    return TrainState()


def run_mae(frames: torch.Tensor, cfg: PretrainConfig, progress: bool = True,
            device: str = "cpu", on_epoch_end: EpochHook | None = None,
            precision: str = "fp32", *, areas: torch.Tensor | None = None,
            chunking: Chunking | None = None) -> MaeRun:
    """Train the MAE (one chunk of it, when ``chunking`` says so); see :func:`train_mae`.

    ``frames`` may be float (a harmonized cohort) or uint8 (a frames population: each batch is
    converted, the population never is). ``areas`` (N, 3, D) are needed only with
    ``cfg.anatomy_weight`` > 0. The step is the unit of resumption: after each one the state can
    be saved, and a resumed run draws exactly what the uninterrupted run would have drawn.
    """
    from duallora.base.device import (
        OptimizerStep,
        autocast,
        configure_determinism,
        resolve_device,
    )

    chunking = chunking or Chunking()
    target = resolve_device(device)
    configure_determinism(target, precision)
    model = build_mae(cfg).to(target)
    head, pooled, targets, anatomy = None, None, None, None
    if cfg.anatomy_weight > 0:
        if areas is None:
            raise KitError("--anatomy-weight needs --frames-population (its per-slice areas)")
        targets, mean, std = standardize_areas(areas)
        head = build_head(model, targets.shape[1], cfg.seed).to(target)
        pooled = PooledTokens(model)
        anatomy = {"weight": cfg.anatomy_weight, "targets": "LV, MYO, RV voxels per slice",
                   "target_mean": [round(float(v), 4) for v in mean],
                   "target_std": [round(float(v), 4) for v in std]}
    optim = _optimizer(model, head, cfg)
    clipped = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    optimizer_step = OptimizerStep(optim, target, precision, cfg.clip_grad, clipped)
    gen = torch.Generator().manual_seed(cfg.seed)
    modules = {"model": model, "optimizer": optim, "head": head, "scaler": optimizer_step.scaler}
    state = _start_state(chunking, modules, gen)
    steps_per_epoch = math.ceil(len(frames) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = min(total, int(round(steps_per_epoch * cfg.warmup_epochs)))
    deadline = (None if chunking.stop_after_minutes is None
                else chunking.started + 60 * chunking.stop_after_minutes)
    model.train()
    bar = tqdm(total=total, initial=state.step, desc="MAE pretraining", unit="step",
               disable=not progress)
    stopped = False

    def save() -> None:
        elapsed = state.wall_time_s + time.perf_counter() - chunking.started
        saved = TrainState(state.step, state.epoch, state.position, state.order, state.log,
                           state.chunks, elapsed)
        save_checkpoint(chunking.checkpoint, chunking.settings, saved, modules, gen)

    while state.step < total:
        if state.order is None:
            state.order = torch.randperm(len(frames), generator=gen)
        index = state.order[state.position:state.position + cfg.batch_size]
        batch = random_shift(as_float(frames[index]), cfg.max_shift, gen)
        removed = slab_token_mask(len(batch), model.config.grid_size, cfg.mask_ratio,
                                  cfg.mask_slab, gen)
        lr = lr_at(state.step, total, warmup, cfg)
        for group in optim.param_groups:
            group["lr"] = lr
        with autocast(target, precision):
            loss, _ = model(batch.to(target), removed.to(target))
            if head is not None:
                aux = anatomy_loss(head, pooled, targets[index].to(target))
        if head is None:
            optimizer_step(loss.float())
        else:
            optimizer_step(loss.float() + cfg.anatomy_weight * aux)
        # "loss" stays the masked-patch MSE, so runs with and without the head compare
        row = {"step": state.step, "epoch": state.epoch, "lr": lr, "loss": loss.item()}
        if head is not None:
            row["anatomy_loss"] = aux.item()
        state.log.append(row)
        bar.update(1)
        bar.set_postfix(epoch=state.epoch, loss=f"{row['loss']:.4f}")
        state.step += 1
        state.position += cfg.batch_size
        if state.position >= len(frames):
            if on_epoch_end is not None:
                on_epoch_end(state.epoch, model)
                model.train()
            state.epoch, state.position, state.order = state.epoch + 1, 0, None
        if chunking.checkpoint is None:
            continue
        if deadline is not None and time.perf_counter() >= deadline and state.step < total:
            save()
            stopped = True
            break
        if state.step == total or (chunking.every and state.step % chunking.every == 0):
            save()
    bar.close()
    if pooled is not None:
        pooled.remove()
    state.wall_time_s += time.perf_counter() - chunking.started
    return MaeRun(model.cpu(), state, stopped, total, anatomy)


def train_mae(frames: torch.Tensor, cfg: PretrainConfig, progress: bool = True,
              device: str = "cpu", on_epoch_end: EpochHook | None = None,
              precision: str = "fp32") -> tuple[MaskedAutoencoder, list[dict]]:
    """Train the MAE; returns it (on the CPU) and one log row per optimisation step.

    Shuffling, shifts and masks are drawn on the CPU from the seed whatever ``device`` is, so a
    GPU run sees the same batches and masks as a CPU run (only float rounding differs).
    ``on_epoch_end(epoch, model)`` runs after every epoch (snapshots, probes); it must leave the
    model as it found it (on ``device``, parameters untouched) so training is not perturbed.
    ``device`` takes ``auto`` like ``duallora train``; ``precision`` (fp32, bf16, fp16) is the
    autocast of the forward pass; weights and AdamW state stay fp32 (``base.device``).
    """
    run = run_mae(frames, cfg, progress, device, on_epoch_end, precision)
    return run.model, run.state.log


def write_loss_curve(log: list[dict], csv_path: Path, png_path: Path) -> None:
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(log[0]))
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


def load_training_data(data_dir: Path, cfg: PretrainConfig, source: str, progress: bool
                       ) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """``(frames, areas or None, data record)`` of a harmonized cohort or a frames population."""
    if source == "harmonized":
        frames = load_frames(Path(data_dir), cfg)
        return frames, None, {"n_volumes": len(frames), "n_subjects": len(frames) // 2}
    if source != "frames":
        raise ValueError(f"source must be harmonized or frames, got {source!r}")
    from duallora.model.frames_population import load_frames_population

    population = load_frames_population(data_dir, cfg.preset().image_size, progress)
    subjects = population.info.get("sizes", {}).get("subjects")
    return population.frames, population.areas, {
        "n_volumes": len(population.frames), "n_subjects": subjects,
        "population": population.summary()}


def data_identity(data: dict) -> dict:
    """What a resumed run's data must share with the checkpoint's (not the folder's path)."""
    population = data.get("population", {})
    return {"n_volumes": data["n_volumes"],
            **{key: population[key] for key in ("generator", "seed", "n_subjects",
                                                "n_centre_sets") if key in population}}


def pretrain(data_dir: Path, out: Path, cfg: PretrainConfig, *, command: str = "",
             data_info: dict | None = None, progress: bool = True, device: str = "cpu",
             precision: str = "fp32", source: str = "harmonized",
             chunking: Chunking | None = None) -> dict:
    """Pretrain on ``data_dir`` and write the weights, loss curve and metadata record.

    ``source`` is ``harmonized`` (a cohort: ED and ES volumes) or ``frames`` (a frames
    population: every cine frame). With ``chunking`` the run may stop early (then nothing but
    the checkpoint is written and ``{"stopped": True, ...}`` is returned) and be resumed.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise KitError(f"--out must end with .safetensors, got {out}")
    started = time.perf_counter()
    frames, areas, data = load_training_data(Path(data_dir), cfg, source, progress)
    data.update(data_info or {})
    from duallora.base.device import resolve_device

    target = resolve_device(device)
    chunking = replace(chunking or Chunking(), started=started, settings=settings(
        asdict(cfg), precision, {"source": source, **data_identity(data)}))
    run = run_mae(frames, cfg, progress=progress, device=str(target), precision=precision,
                  areas=areas, chunking=chunking)
    if run.stopped:
        return {"stopped": True, "steps_done": run.state.step, "total_steps": run.total_steps,
                "checkpoint": str(chunking.checkpoint), "chunks": run.state.chunks}
    log = run.state.log
    header = {"format": MAE_ENCODER_FORMAT, "size": cfg.size, "seed": cfg.seed,
              "image_size": ",".join(map(str, cfg.preset().image_size))}
    save_weights(encoder_state(run.model), out, header)
    write_loss_curve(log, out.with_name(out.stem + "_loss.csv"),
                     out.with_name(out.stem + "_loss.png"))
    record = {
        "command": command,
        "config": asdict(cfg),
        "data": data,
        "final_loss": round(final_loss(log), 6),
        "first_epoch_loss": round(epoch_mean_losses(log)[0], 6),
        "steps": len(log),
        "wall_time_s": round(run.state.wall_time_s, 1),
        "chunks": run.state.chunks,
        "resumes": run.state.chunks - 1,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu",
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "format": MAE_ENCODER_FORMAT,
    }
    if run.anatomy is not None:
        record["anatomy"] = run.anatomy
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record
