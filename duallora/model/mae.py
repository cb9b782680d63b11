"""Masked autoencoder around the ConvViT encoder, as CineMA pretrains it (view ``sax`` only).

The encoder sees one frame (1 channel) with 75% of its tokens removed: the removed tokens are
dropped before the transformer and their voxels are zeroed inside the masked conv blocks, so no
information leaks through the conv stem. A light cross-attention decoder (queries: CLS + one mask
token per removed patch; keys: the visible tokens) predicts the removed 16x16x1 voxel patches;
the loss is the MSE on those patches only.

Parameter names follow CineMA's MAE checkpoint (``enc_down_dict.sax.*``, ``encoder.*``,
``dec_linear``, ``dec_embed_dict.sax.*``, ``decoder.*``, ``pred_head_dict.sax``), so the encoder
we save goes through the very same :func:`load_cinema_pretrained` as CineMA's published weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from duallora.base.presets import ConvViTConfig
from duallora.model.backbone import VIEW, ConvViTBackbone
from duallora.model.layers import (
    VIT_NORM_EPS,
    Block,
    init_vit_weights,
    patchify,
    sincos_pos_embed,
    unpatchify,
)


def random_token_mask(batch: int, n_tokens: int, ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, n_tokens) bool, True = removed; exactly ``int(n*(1-ratio))`` kept per sample."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    n_keep = int(n_tokens * (1 - ratio))
    noise = torch.rand(batch, n_tokens, generator=generator)
    order = torch.argsort(noise, dim=1)
    removed = torch.ones(batch, n_tokens, dtype=torch.bool)
    removed[:, :n_keep] = False
    return torch.gather(removed, 1, torch.argsort(order, dim=1))


def slab_token_mask(batch: int, grid: tuple[int, int, int], ratio: float, slab: int = 1,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Like :func:`random_token_mask`, but hides runs of ``slab`` consecutive slices together.

    Why: neighbouring short-axis slices look alike, so with per-token masking (``slab=1``,
    CineMA's) a hidden patch can often be copied from the slice above or below. Hiding slabs
    (``slab = grid depth`` is VideoMAE's "tube" masking) forces the encoder to infer the anatomy
    from other in-plane positions. ``slab=1`` draws exactly what :func:`random_token_mask` does.
    """
    h, w, d = grid
    if slab < 1 or d % slab:
        raise ValueError(f"mask slab must divide the token grid's depth {d}, got {slab}")
    cells = random_token_mask(batch, h * w * (d // slab), ratio, generator)
    return cells.repeat_interleave(slab, dim=1)  # tokens are in (h, w, d) order, d fastest


class DecoderEmbedding(nn.Module):
    """Fixed sin-cos positions and the learnable mask token of the decoder."""

    def __init__(self, dec_dim: int, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(sincos_pos_embed(dec_dim, grid), requires_grad=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        nn.init.normal_(self.mask_token, std=0.02)


class ViTDecoder(nn.Module):
    def __init__(self, dim: int, depth: int, n_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, n_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=VIT_NORM_EPS)


class MaskedAutoencoder(ConvViTBackbone):
    """ConvViT encoder (one frame in) + cross-attention decoder predicting removed patches."""

    def __init__(self, cfg: ConvViTConfig, dec_dim: int, dec_depth: int, dec_heads: int,
                 norm_target: bool = False) -> None:
        super().__init__(cfg, in_chans=1)
        # CineMA's option: predict each patch standardised by its own mean and std (MAE paper),
        # so the loss rewards structure rather than absolute intensity (vendor-dependent).
        self.norm_target = norm_target
        self.dec_linear = nn.Linear(cfg.embed_dim, dec_dim)
        self.dec_embed_dict = nn.ModuleDict({VIEW: DecoderEmbedding(dec_dim, cfg.grid_size)})
        self.decoder = ViTDecoder(dec_dim, dec_depth, dec_heads, cfg.mlp_ratio)
        self.patch = cfg.effective_patch
        self.pred_head_dict = nn.ModuleDict({VIEW: nn.Linear(dec_dim, math.prod(self.patch))})
        for module in (self.dec_linear, self.decoder, self.pred_head_dict):
            module.apply(init_vit_weights)

    def forward(self, image: torch.Tensor, removed: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` (B, 1, H, W, D), ``removed`` (B, n_tokens) bool -> (loss, predicted patches
        (B, n_removed, voxels per patch))."""
        self.check_input(image)
        b = image.shape[0]
        skips, tokens = self.enc_down_dict[VIEW](image, removed)
        visible = tokens[~removed].reshape(b, -1, tokens.shape[-1])
        h = self.encoder(visible)
        patches = self.enc_fusion_dict[VIEW](skips, h[:, 1:], removed)
        z = self.dec_linear(torch.cat([h[:, :1], patches], dim=1))

        embed = self.dec_embed_dict[VIEW]
        pos = embed.pos_embed.expand(b, -1, -1)
        dim = z.shape[-1]
        keys = z[:, 1:] + pos[~removed].reshape(b, -1, dim)
        queries = torch.cat([z[:, :1], embed.mask_token + pos[removed].reshape(b, -1, dim)], 1)
        for block in self.decoder.blocks:
            queries = block(queries, keys)
        pred = self.pred_head_dict[VIEW](self.decoder.norm(queries[:, 1:]))

        target = patchify(image, self.patch)
        if self.norm_target:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var**0.5 + 1e-6)
        target = target[removed].reshape(pred.shape)
        return F.mse_loss(pred, target), pred

    def reconstruct(self, image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        """The image with removed patches replaced by predictions (for figures)."""
        with torch.no_grad():
            _, pred = self(image, removed)
            patches = patchify(image, self.patch).clone()
            patches[removed] = pred.reshape(-1, pred.shape[-1])
            return unpatchify(patches, self.patch, self.config.grid_size)
