"""Reading and writing ConvViT weights: CineMA's MAE checkpoint, fine-tuned checkpoints, ours.

Two upstream layouts exist (``../shared/reference`` lists both):

- the MAE pretraining checkpoint (``pretrained/cinema.safetensors``): encoder, decoder, mask
  tokens and four views, each view's stem taking a single frame. :func:`load_cinema_pretrained`
  takes the ``sax`` encoder out of it;
- a fine-tuned classifier: exactly our :class:`ConvViT` state dict, loaded strictly by
  :func:`load_finetuned`.

First conv and frames. The MAE saw one frame at a time, so its first conv has one input channel;
the classifier stacks ED and ES as two channels. Like CineMA we repeat the single-channel kernel
for every frame, unscaled by default (``frame_init="repeat"``), so the initialisation is the one
CineMA's own fine-tuning starts from. That is nearly the same as averaging the frames: the conv
then sees ``W*(ED+ES) = 2*W*mean(ED, ES)`` and the channel LayerNorm right after it removes the
overall scale, only the small conv bias weighs half as much. ``frame_init="mean"`` divides by the
number of frames instead, which makes a pretrained stem see exactly the frame average.
Under ``frames="per-frame"`` (``duallora.model.frames``) the model's first conv has one input
channel, so the MAE kernel loads as is and nothing is expanded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from duallora.errors import KitError
from duallora.model.backbone import VIEW

FIRST_CONV_KEY = f"enc_down_dict.{VIEW}.conv_blocks.0.patch_embed.conv.weight"
POS_EMBED_KEY = f"enc_down_dict.{VIEW}.pos_embed"
ENCODER_PREFIXES = (f"enc_down_dict.{VIEW}.", f"enc_fusion_dict.{VIEW}.", "encoder.")
FRAME_INITS = ("repeat", "mean")


class CheckpointError(KitError, ValueError):
    """A checkpoint that does not fit the model (names or shapes), or cannot be read."""


@dataclass
class PretrainedLoadReport:
    """What :func:`load_cinema_pretrained` did, key by key."""

    path: str
    loaded: list[str] = field(default_factory=list)
    expanded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept_from_model: list[str] = field(default_factory=list)
    pos_embed_max_diff: float | None = None  # checkpoint vs our sin-cos, when the grids match


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch checkpoint (``model``/``state_dict`` key)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means an unusable file
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    for wrapper in ("model", "state_dict"):
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in payload.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return payload


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a ``.safetensors`` header (empty for other files)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return dict(handle.metadata() or {})


def _as_state(source: str | Path | dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(source, dict):
        return source, "<state dict>"
    return read_state_dict(source), str(source)


def _expand_first_conv(weight: torch.Tensor, n_frames: int, frame_init: str,
                       where: str) -> torch.Tensor:
    """(C, 1, *k) -> (C, n_frames, *k): one copy of the single-frame kernel per frame."""
    if weight.shape[1] != 1:
        raise CheckpointError(f"{where}: {FIRST_CONV_KEY} has {weight.shape[1]} input channels; "
                              f"expected 1 (MAE, one frame) or {n_frames} (one per frame)")
    expanded = weight.repeat(1, n_frames, *([1] * (weight.ndim - 2)))
    return expanded / n_frames if frame_init == "mean" else expanded


def load_cinema_pretrained(model: nn.Module, path: str | Path | dict[str, torch.Tensor], *,
                           frame_init: str = "repeat", freeze: bool = False,
                           ) -> PretrainedLoadReport:
    """Load the ``sax`` encoder of a CineMA MAE checkpoint into a :class:`ConvViT`.

    Keeps: ``enc_down_dict.sax.*``, ``enc_fusion_dict.sax.*``, ``encoder.*``. Drops: decoder,
    ``dec_*``, mask tokens, reconstruction heads and the other views. The model keeps its own
    fixed sin-cos ``pos_embed`` (so any image size works) and its classification heads. The first
    conv is expanded from one frame to ``model.n_frames`` (see the module docstring).

    Raises :class:`CheckpointError` when any encoder parameter of the model is missing from the
    checkpoint, has another shape, or when the checkpoint holds encoder parameters the model
    lacks (e.g. a deeper encoder): nothing is loaded silently half-way.
    """
    if frame_init not in FRAME_INITS:
        raise ValueError(f"frame_init must be one of {FRAME_INITS}, got {frame_init!r}")
    state, where = _as_state(path)
    if not any(k.startswith(f"enc_down_dict.{VIEW}.") for k in state):
        raise CheckpointError(f"{where} has no '{VIEW}' encoder (no enc_down_dict.{VIEW}.* keys);"
                              f" is it a CineMA checkpoint?")
    report = PretrainedLoadReport(path=where)
    own = model.state_dict()
    wanted = {k for k in own if k.startswith(ENCODER_PREFIXES) and k != POS_EMBED_KEY}
    report.kept_from_model = sorted(set(own) - wanted)

    selected: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in wanted:
            selected[key] = value
        elif key.startswith(ENCODER_PREFIXES) and key != POS_EMBED_KEY:
            raise CheckpointError(f"{where}: encoder parameter {key} has no place in this model "
                                  f"(size {getattr(model, 'size', '?')}, depth "
                                  f"{len(model.encoder.blocks)}); wrong model size?")
        else:
            report.dropped.append(key)

    missing = sorted(wanted - set(selected))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{where} lacks {len(missing)} encoder parameter(s): {shown}")

    first = selected[FIRST_CONV_KEY]
    if first.shape != own[FIRST_CONV_KEY].shape:
        selected[FIRST_CONV_KEY] = _expand_first_conv(first, own[FIRST_CONV_KEY].shape[1],
                                                      frame_init, where)
        report.expanded.append(FIRST_CONV_KEY)
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in selected.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{where}: mis-shaped encoder parameter(s): " + "; ".join(bad[:5]))

    ckpt_pos = state.get(POS_EMBED_KEY)
    if ckpt_pos is not None and ckpt_pos.shape == own[POS_EMBED_KEY].shape:
        diff = (ckpt_pos.float() - own[POS_EMBED_KEY].float()).abs().max()
        report.pos_embed_max_diff = float(diff)

    result = model.load_state_dict(selected, strict=False)
    if result.unexpected_keys or set(result.missing_keys) != set(report.kept_from_model):
        raise CheckpointError(f"{where}: internal load mismatch {result}")
    report.loaded = sorted(selected)
    if freeze:
        for name, param in model.named_parameters():
            if name in selected:
                param.requires_grad_(False)
    return report


def load_finetuned(model: nn.Module, path: str | Path | dict[str, torch.Tensor]) -> nn.Module:
    """Strictly load a fine-tuned CineMA (or kit) ConvViT checkpoint: every name and shape."""
    state, where = _as_state(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
           if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if bad:
            parts.append(f"mis-shaped {len(bad)} (e.g. {bad[0]})")
        raise CheckpointError(f"{where} does not match this ConvViT "
                              f"(size {getattr(model, 'size', '?')}): " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def save_weights(state: dict[str, torch.Tensor], path: str | Path,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write tensors (made contiguous, detached, on CPU) to a ``.safetensors`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder part of a ConvViT/MAE state dict, in CineMA's MAE checkpoint layout."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(ENCODER_PREFIXES)}


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
