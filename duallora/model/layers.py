"""Building blocks of CineMA's ConvViT, written to reproduce its parameter names and arithmetic.

Every class here matches one CineMA module (same attribute names, same normalisation epsilons,
same order of operations), so that checkpoints trained upstream load strictly and compute the
same numbers. Nothing here depends on timm.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# CineMA uses eps=1e-6 for the channel-wise LayerNorms of the convolutional stem and PyTorch's
# default 1e-5 for the transformer's LayerNorms; both matter for reproducing its logits.
CONV_NORM_EPS = 1e-6
VIT_NORM_EPS = 1e-5


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (batch, channels, *spatial) feature map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.permute(0, *range(2, x.ndim), 1)
        normed = super().forward(channels_last)
        return normed.permute(0, x.ndim - 1, *range(1, x.ndim - 1)).contiguous()


class ConvNormAct(nn.Module):
    """Strided patchifying conv, channel LayerNorm, GELU: the start of every stem stage."""

    def __init__(self, in_chans: int, out_chans: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_chans, out_chans, kernel_size=kernel, stride=kernel,
                              padding="valid")
        self.norm = ChannelLayerNorm(out_chans, eps=CONV_NORM_EPS)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvMlp(nn.Module):
    """Point-wise (1x1x1 convolution) MLP with GELU, the MLP of a masked conv block."""

    def __init__(self, chans: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(chans, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv3d(hidden, chans, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MaskedConvBlock(nn.Module):
    """ConvMAE's residual conv block; an optional voxel mask hides masked regions (MAE only).

    Path 1: norm -> 1x1x1 conv -> (mask) -> depth-wise 5x5x5 conv -> 1x1x1 conv, added back.
    Path 2: norm -> point-wise MLP, added back.
    """

    def __init__(self, chans: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(chans, eps=CONV_NORM_EPS)
        self.norm2 = ChannelLayerNorm(chans, eps=CONV_NORM_EPS)
        self.conv1 = nn.Conv3d(chans, chans, kernel_size=1, padding="same")
        self.conv2 = nn.Conv3d(chans, chans, kernel_size=1, padding="same")
        self.dw_conv = nn.Conv3d(chans, chans, kernel_size=5, padding="same", groups=chans)
        self.mlp = ConvMlp(chans, chans * mlp_ratio)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """``visible``: (batch, *spatial), 1 where the voxel is visible to the encoder."""
        h = self.conv1(self.norm1(x))
        if visible is not None:
            h = visible.unsqueeze(1).to(h.dtype) * h
        x = x + self.conv2(self.dw_conv(h))
        return x + self.mlp(self.norm2(x))


def patchify(image: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, H, W, D) -> (B, h*w*d, p*q*r*C), patches in (h, w, d) order, channels last.

    The flattening order inside a patch (p, q, r, C) is CineMA's, so its linear patch projection
    (``patch_embed.proj``) reads the same features.
    """
    b, c, H, W, D = image.shape
    p, q, r = patch
    h, w, d = H // p, W // q, D // r
    x = image.reshape(b, c, h, p, w, q, d, r)
    x = torch.einsum("nchpwqdr->nhwdpqrc", x).contiguous()
    return x.reshape(b, h * w * d, p * q * r * c)


def unpatchify(x: torch.Tensor, patch: tuple[int, int, int],
               grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, h*w*d, p*q*r*C) -> (B, C, H, W, D)."""
    b = x.shape[0]
    p, q, r = patch
    h, w, d = grid
    x = x.reshape(b, h, w, d, p, q, r, -1)
    x = torch.einsum("nhwdpqrc->nchpwqdr", x).contiguous()
    return x.reshape(b, -1, h * p, w * q, d * r)


class PatchProjection(nn.Module):
    """Flatten non-overlapping patches and project them linearly to the token width."""

    def __init__(self, in_chans: int, patch: tuple[int, int, int], embed_dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_chans * math.prod(patch), embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(patchify(x, self.patch))


def sincos_pos_embed(embed_dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """CineMA's fixed n-d sin-cos positional embedding, shape (1, prod(grid), embed_dim).

    Each of the n axes gets ``embed_dim // n`` channels (rounded down to even; leftover channels
    are zero), half sine and half cosine with periods up to 10000. The coordinate grid is built
    with NumPy's default ``meshgrid`` indexing ("xy"), exactly as upstream does: that swaps the
    first two axes relative to the token order, and reproducing it keeps the embedding identical.
    """
    axes = [np.arange(size, dtype=np.float64) for size in grid]
    coords = np.stack(np.meshgrid(*axes), axis=0).reshape(len(grid), -1)
    per_axis = embed_dim // len(grid)
    per_axis -= per_axis % 2
    half = per_axis // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half, dtype=np.float64) / max(half, 1))
    parts = []
    for axis_coords in coords:
        angles = np.outer(axis_coords, freqs)
        parts += [np.sin(angles), np.cos(angles)]
    emb = np.concatenate(parts, axis=1)
    pad = embed_dim - emb.shape[1]
    if pad > 0:
        emb = np.concatenate([emb, np.zeros((emb.shape[0], pad))], axis=1)
    return torch.from_numpy(emb).float().unsqueeze(0)


class Attention(nn.Module):
    """Multi-head attention with separate query (``q``) and key/value (``kv``) projections.

    The split projections let the MAE decoder attend from mask tokens to visible tokens; for the
    encoder, keys come from the same tokens. They are also the LoRA targets of the federated part.
    """

    def __init__(self, dim: int, n_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        k = q if k is None else k
        b, n_q, dim = q.shape
        n_k = k.shape[1]
        query = self.q(q).reshape(b, n_q, self.n_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(k).reshape(b, n_k, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        key, value = kv.unbind(0)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.proj(out.transpose(1, 2).reshape(b, n_q, dim))


class Mlp(nn.Module):
    """Transformer MLP: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int = 4, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=VIT_NORM_EPS)
        self.attn = Attention(dim, n_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=VIT_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """``keys`` (MAE decoder only) are attended to as they are, without ``norm1``."""
        x = x + self.attn(self.norm1(x), keys)
        return x + self.mlp(self.norm2(x))


def init_vit_weights(module: nn.Module) -> None:
    """CineMA's initialisation: Xavier-uniform linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
