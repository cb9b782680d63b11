"""The ConvViT's parts, with CineMA's parameter names: conv stem, ViT encoder, skip fusion.

``ConvViTBackbone`` holds the three parts that the classifier (``convvit.ConvViT``) and the
masked autoencoder (``mae``) share: ``enc_down_dict.sax`` (conv stages keeping a skip map each,
then the patch projection and the fixed sin-cos positional embedding), ``encoder`` (CLS token,
pre-norm transformer blocks, final LayerNorm) and ``enc_fusion_dict.sax`` (each skip map
down-sampled to the token grid and added to the patch tokens). The data flow is described in
``duallora.model.convvit``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from duallora.base.presets import ConvViTConfig
from duallora.model.layers import (
    VIT_NORM_EPS,
    Block,
    ConvNormAct,
    MaskedConvBlock,
    PatchProjection,
    init_vit_weights,
    sincos_pos_embed,
)

VIEW = "sax"
TOKENS_KEY = "tokens"


def skip_key(stage: int) -> str:
    """Name of the conv-stage skip map ``stage`` in a :meth:`ConvViT.forward_prefix` state."""
    return f"skip{stage}"


def _scale(size: tuple[int, ...], factor: tuple[int, ...], power: int = 1) -> tuple[int, ...]:
    return tuple(s * f**power for s, f in zip(size, factor, strict=True))


def _upsample_mask(mask: torch.Tensor, factor: tuple[int, int, int]) -> torch.Tensor:
    """Repeat each voxel of a (B, h, w, d) mask ``factor`` times along each axis."""
    for axis, f in enumerate(factor, start=1):
        mask = mask.repeat_interleave(f, dim=axis)
    return mask


class StemStage(nn.Module):
    """One conv stage: strided conv + norm + GELU (``patch_embed``), then masked conv blocks."""

    def __init__(self, in_chans: int, out_chans: int, kernel: tuple[int, int, int],
                 n_blocks: int) -> None:
        super().__init__()
        self.patch_embed = ConvNormAct(in_chans, out_chans, kernel)
        self.conv = nn.ModuleList([MaskedConvBlock(out_chans) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.conv:
            x = block(x, visible)
        return x


class DownsampleEncoder(nn.Module):
    """Conv stem + patch tokens with positional embedding (CineMA's ``DownsampleEncoder``)."""

    def __init__(self, cfg: ConvViTConfig, in_chans: int) -> None:
        super().__init__()
        kernels = [cfg.patch_size] + [cfg.scale_factor] * len(cfg.conv_chans)
        self.stage_kernels = kernels[:-1]
        self.token_kernel = kernels[-1]
        self.grid_size = cfg.grid_size
        self.pos_embed = nn.Parameter(sincos_pos_embed(cfg.embed_dim, cfg.grid_size),
                                      requires_grad=False)
        chans = [in_chans, *cfg.conv_chans]
        self.conv_blocks = nn.ModuleList(
            [StemStage(chans[i], chans[i + 1], self.stage_kernels[i], cfg.conv_n_blocks)
             for i in range(len(cfg.conv_chans))])
        self.patch_embed = PatchProjection(chans[-1], self.token_kernel, cfg.embed_dim)
        self.linear = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def visible_masks(self, removed: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage voxel masks (1 = visible) from a (B, n_tokens) token mask (1 = removed)."""
        visible = ~removed.reshape(removed.shape[0], *self.grid_size)
        masks: list[torch.Tensor] = []
        for _ in self.conv_blocks:
            visible = _upsample_mask(visible, self.token_kernel)
            masks.insert(0, visible)
        return masks

    def forward(self, image: torch.Tensor, removed: torch.Tensor | None = None,
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Returns the skip map of each stage and all patch tokens (B, n_tokens, embed_dim)."""
        masks = self.visible_masks(removed) if removed is not None else [None] * len(
            self.conv_blocks)
        skips = []
        x = image
        for stage, visible in zip(self.conv_blocks, masks, strict=True):
            x = stage(x, visible)
            skips.append(x)
        tokens = self.linear(self.patch_embed(x)) + self.pos_embed
        return skips, tokens


class MultiScaleFusion(nn.Module):
    """Adds each skip map, down-sampled to the token grid, to the encoded patch tokens."""

    def __init__(self, cfg: ConvViTConfig) -> None:
        super().__init__()
        n = len(cfg.conv_chans)
        self.down_convs = nn.ModuleList()
        for i, chans in enumerate(cfg.conv_chans):
            kernel = _scale((1, 1, 1), cfg.scale_factor, power=n - i)
            self.down_convs.append(nn.Conv3d(chans, cfg.embed_dim, kernel_size=kernel,
                                             stride=kernel, padding="valid"))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=VIT_NORM_EPS)

    def forward(self, skips: list[torch.Tensor], patches: torch.Tensor,
                removed: torch.Tensor | None = None) -> torch.Tensor:
        """``patches``: (B, n, d) encoder output without CLS; ``removed`` drops masked tokens."""
        for skip, conv in zip(skips, self.down_convs, strict=True):
            down = conv(skip).flatten(2).transpose(1, 2)
            if removed is not None:
                down = down[~removed].reshape(patches.shape[0], -1, patches.shape[-1])
            patches = patches + down
        return self.norm(patches)


class ViTEncoder(nn.Module):
    """CLS token + pre-norm transformer blocks + final LayerNorm (shared across views)."""

    def __init__(self, cfg: ConvViTConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.blocks = nn.ModuleList([Block(cfg.embed_dim, cfg.n_heads, cfg.mlp_ratio)
                                     for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=VIT_NORM_EPS)

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1)

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.run_blocks(self.prepend_cls(tokens), 0, len(self.blocks))
        return self.norm(x)


class ConvViTBackbone(nn.Module):
    """The parts shared by the classifier and the masked autoencoder (same parameter names)."""

    def __init__(self, cfg: ConvViTConfig, in_chans: int, n_input_frames: int | None = None,
                 ) -> None:
        """``in_chans``: input channels of the first conv; ``n_input_frames``: frames per sample
        of the model's input (the same, except under ``frames="per-frame"``)."""
        super().__init__()
        for size, eff in zip(cfg.image_size, cfg.effective_patch, strict=True):
            if size % eff:
                raise ValueError(f"image_size {cfg.image_size} must be divisible by the "
                                 f"effective patch {cfg.effective_patch}")
        self.config = cfg
        self.in_chans = in_chans
        self.n_input_frames = in_chans if n_input_frames is None else n_input_frames
        self.enc_down_dict = nn.ModuleDict({VIEW: DownsampleEncoder(cfg, in_chans)})
        self.enc_fusion_dict = nn.ModuleDict({VIEW: MultiScaleFusion(cfg)})
        self.encoder = ViTEncoder(cfg)
        self.apply(init_vit_weights)
        nn.init.normal_(self.encoder.cls_token, std=0.02)

    @property
    def n_blocks(self) -> int:
        return len(self.encoder.blocks)

    @property
    def n_tokens(self) -> int:
        return math.prod(self.config.grid_size)

    def check_input(self, x: torch.Tensor) -> None:
        """Clear errors for the usual mistakes: wrong rank/size/frames, integer data, NaNs."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"ConvViT input must be a torch.Tensor, got {type(x).__name__}")
        expected = (self.n_input_frames, *self.config.image_size)
        if x.ndim != 5:
            raise ValueError(f"ConvViT input must be (batch, frames, H, W, D) = (B, {expected}), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[1] != self.n_input_frames:
            raise ValueError(f"ConvViT expects {self.n_input_frames} frame(s) per sample (ED, ES "
                             f"stacked on axis 1), got {x.shape[1]} in shape {tuple(x.shape)}")
        if tuple(x.shape[2:]) != tuple(self.config.image_size):
            raise ValueError(f"ConvViT expects volumes of size {self.config.image_size}, got "
                             f"{tuple(x.shape[2:])}; resize with the preset's crop_size "
                             f"{self.config.crop_size} mm (duallora.data does this)")
        if not x.is_floating_point():
            raise ValueError(f"ConvViT input must be floating point in [0, 1], got {x.dtype}; "
                             f"convert uint8 volumes with x.float() / 255")
        param_dtype = self.encoder.cls_token.dtype
        if x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"ConvViT input dtype {x.dtype} differs from the model's "
                             f"{param_dtype}; call x.to({param_dtype})")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("ConvViT input contains NaN or infinite values")
