"""CineMA's ConvViT for the short-axis (``sax``) view, re-implemented with identical parameters.

Data flow for one batch ``x`` of shape (B, n_frames, H, W, D), frames stacked as channels:

1. ``enc_down_dict.sax`` (stem): conv stages (strided conv + masked conv blocks) keep a skip
   feature map each, then a linear patch projection, a linear layer and the fixed sin-cos
   positional embedding give one token per 16x16x1 voxels.
2. ``encoder``: a CLS token is prepended; pre-norm transformer blocks; final LayerNorm.
3. ``enc_fusion_dict.sax``: each skip map is down-sampled by a strided conv to the token grid and
   added to the patch tokens, then LayerNorm (the CLS token skips the fusion).
4. ``pred_head_dict``: ``sax`` reads the mean patch token, ``cls`` the CLS token; the logits are
   averaged (CineMA's ``reduce="all"``).

``forward_prefix``/``forward_suffix`` cut step 2 after any block, so that frozen computation can
be cached once and only the adapted blocks re-run (the federated loop relies on this).

``config.frames`` (see ``duallora.model.frames``) says how ED and ES enter: ``repeat`` and
``trainable-stem`` stack them as channels of the first conv (CineMA); ``per-frame`` runs the
one-frame stem and blocks ``[0, fusion_block)`` on each frame and fuses the two streams there.
Under every mode ``forward_suffix(forward_prefix(x, k), k) == forward(x)`` for every ``k``.
"""

from __future__ import annotations

import torch
from torch import nn

from duallora.base.presets import PER_FRAME, TRAINABLE_STEM, ConvViTConfig, get_preset
from duallora.model.backbone import TOKENS_KEY, VIEW, ConvViTBackbone, skip_key
from duallora.model.frames import (
    FRAME_NAMES,
    FUSION_PREFIX,
    FrameFusion,
    frame_key,
    join_frames,
    split_frames,
)


class ConvViT(ConvViTBackbone):
    """CineMA's ConvViT classifier on view ``sax`` (see the module docstring)."""

    def __init__(self, cfg: ConvViTConfig, size: str = "custom") -> None:
        if cfg.frames == PER_FRAME and cfg.n_frames != len(FRAME_NAMES):
            raise ValueError(f"frames='per-frame' fuses ED and ES: it needs n_frames=2, got "
                             f"{cfg.n_frames} (a one-frame model is already per-frame)")
        stem_chans = 1 if cfg.frames == PER_FRAME else cfg.n_frames
        super().__init__(cfg, in_chans=stem_chans, n_input_frames=cfg.n_frames)
        self.size = size
        self.n_frames = cfg.n_frames
        self.frames = cfg.frames
        self.pred_head_dict = nn.ModuleDict({VIEW: nn.Linear(cfg.embed_dim, cfg.n_classes),
                                             "cls": nn.Linear(cfg.embed_dim, cfg.n_classes)})
        # Fixed standardization of the two head inputs (row 0: mean patch token, row 1: CLS).
        # Identity by default, so the model is CineMA's; not in the state dict, so CineMA
        # checkpoints load strictly. See set_head_standardization for why it exists.
        self.register_buffer("head_input_mean", torch.zeros(2, cfg.embed_dim), persistent=False)
        self.register_buffer("head_input_std", torch.ones(2, cfg.embed_dim), persistent=False)
        # Per-frame only: the trainable fusion of the two streams (own seeded init, so the
        # global RNG and hence the heads' init are the same in every mode), applied before block
        # ``fusion_block``; build_client_model sets that to the first adapted block.
        self.fusion_block = self.n_blocks
        if self.frames == PER_FRAME:
            self.frame_fusion = FrameFusion(cfg.embed_dim, tuple(cfg.conv_chans))

    def set_fusion_block(self, block: int) -> None:
        """Fuse the two frame streams before ``block`` (per-frame only; ``n_blocks``: after the
        last block). Put it at the first trained block so the frozen prefix stays per-frame."""
        self._check_split(block)
        self.fusion_block = block

    @property
    def per_frame(self) -> bool:
        return self.frames == PER_FRAME

    def stem_parameter_names(self) -> list[str]:
        """The first conv's weight and bias under ``trainable-stem`` (trained there), else []."""
        if self.frames != TRAINABLE_STEM:
            return []
        conv = f"enc_down_dict.{VIEW}.conv_blocks.0.patch_embed.conv."
        return [name for name, _ in self.named_parameters() if name.startswith(conv)]

    def fusion_parameter_names(self) -> list[str]:
        """The frame fusion's parameters (``per-frame`` only)."""
        return [name for name, _ in self.named_parameters() if name.startswith(FUSION_PREFIX)]

    def set_head_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardize what the heads read: ``head((v - mean) / std)`` per head input.

        After the final LayerNorm, a frozen encoder's pooled features differ little between
        subjects (a few percent of their size), so a linear head trained by SGD/Adam mostly
        chases the common part and learns slowly. Standardizing with statistics of the training
        features (fixed for a run) is the usual cure; :meth:`fold_head_standardization` turns it
        back into plain CineMA heads. ``mean``/``std`` are (2, d): patch-mean row, CLS row.
        """
        shape = tuple(self.head_input_mean.shape)
        if tuple(mean.shape) != shape or tuple(std.shape) != shape:
            raise ValueError(f"head standardization needs mean and std of shape {shape}, got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError("head standardization needs finite means and positive stds")
        self.head_input_mean.copy_(mean)
        self.head_input_std.copy_(std)

    @torch.no_grad()
    def fold_head_standardization(self) -> None:
        """Fold the standardization into the heads' weights and reset it to the identity.

        ``W (v - m) / s + b == (W / s) v + (b - W m / s)``: same logits, CineMA-format heads.
        """
        for row, name in enumerate((VIEW, "cls")):
            head = self.pred_head_dict[name]
            mean, std = self.head_input_mean[row], self.head_input_std[row]
            head.bias.sub_(head.weight @ (mean / std))
            head.weight.div_(std)
        self.head_input_mean.zero_()
        self.head_input_std.fill_(1.0)

    def raw_head_inputs(self, state: dict[str, torch.Tensor], from_block: int) -> torch.Tensor:
        """The two vectors the heads read, before standardization: (B, 2, d) (mean patch
        token, CLS), from a :meth:`forward_prefix` state cut at ``from_block``."""
        cls, patches = self.suffix_features(state, from_block)
        return torch.cat([patches.mean(dim=1, keepdim=True), cls], dim=1)

    def head_inputs(self, state: dict[str, torch.Tensor], from_block: int) -> torch.Tensor:
        """:meth:`raw_head_inputs`, standardized as the heads read them."""
        raw = self.raw_head_inputs(state, from_block)
        return (raw - self.head_input_mean) / self.head_input_std

    def head_parameter_names(self) -> list[str]:
        """Names of the classification heads' parameters (trained in every strategy)."""
        return [f"pred_head_dict.{name}" for name, _ in self.pred_head_dict.named_parameters()]

    def prefix_parameter_names(self, upto_block: int) -> list[str]:
        """Parameters that :meth:`forward_prefix` (``upto_block``) reads: freeze them to cache."""
        self._check_split(upto_block)

        def in_prefix(name: str) -> bool:
            if name.startswith("encoder.blocks."):
                return int(name.split(".")[2]) < upto_block
            if name.startswith(FUSION_PREFIX):
                return upto_block > self.fusion_block
            return name.startswith(f"enc_down_dict.{VIEW}.") or name == "encoder.cls_token"

        return [name for name, _ in self.named_parameters() if in_prefix(name)]

    def _check_split(self, block: int) -> None:
        if not isinstance(block, int) or not 0 <= block <= self.n_blocks:
            raise ValueError(f"split point must be an int in [0, {self.n_blocks}], got {block!r}")

    def _plain_keys(self) -> list[str]:
        return [TOKENS_KEY] + [skip_key(i) for i in range(len(self.config.conv_chans))]

    def state_keys(self, upto_block: int) -> list[str]:
        """Keys of a :meth:`forward_prefix` state cut at ``upto_block``: ``tokens`` and
        ``skip{i}``, or under ``per-frame`` before the fusion block each of them per frame
        (``tokens@ED``, ``tokens@ES``, ``skip0@ED``, ...)."""
        self._check_split(upto_block)
        if self.per_frame and upto_block <= self.fusion_block:
            return [frame_key(key, frame) for key in self._plain_keys() for frame in FRAME_NAMES]
        return self._plain_keys()

    def forward_prefix(self, x: torch.Tensor, upto_block: int) -> dict[str, torch.Tensor]:
        """Run the stem and blocks ``[0, upto_block)``.

        Returns batch-first tensors: ``tokens`` (B, 1 + n_tokens, d) (CLS first) and one
        ``skip{i}`` map (B, C_i, h_i, w_i, d_i) per conv stage, everything the suffix needs.
        Under ``per-frame`` with ``upto_block <= fusion_block`` the frames are not fused yet:
        the same tensors once per frame, under ``tokens@ED``, ``tokens@ES``, ``skip0@ED``, ...
        """
        self._check_split(upto_block)
        self.check_input(x)
        if self.per_frame:
            return self._per_frame_prefix(x, upto_block)
        skips, tokens = self.enc_down_dict[VIEW](x)
        h = self.encoder.run_blocks(self.encoder.prepend_cls(tokens), 0, upto_block)
        state = {TOKENS_KEY: h}
        state.update({skip_key(i): skip for i, skip in enumerate(skips)})
        return state

    def _per_frame_prefix(self, x: torch.Tensor, upto_block: int) -> dict[str, torch.Tensor]:
        batch = x.shape[0]
        one_frame = x.transpose(0, 1).reshape(len(FRAME_NAMES) * batch, 1, *x.shape[2:])
        skips, tokens = self.enc_down_dict[VIEW](one_frame)
        stop = min(upto_block, self.fusion_block)
        h = self.encoder.run_blocks(self.encoder.prepend_cls(tokens), 0, stop)
        state = {TOKENS_KEY: h}
        state.update({skip_key(i): skip for i, skip in enumerate(skips)})
        state = split_frames(state, batch)
        if upto_block <= self.fusion_block:
            return state
        state = self._fuse(state)
        state[TOKENS_KEY] = self.encoder.run_blocks(state[TOKENS_KEY], self.fusion_block,
                                                    upto_block)
        return state

    def _fuse(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.frame_fusion(state, TOKENS_KEY, self._plain_keys()[1:])

    def _check_state(self, state: dict[str, torch.Tensor], from_block: int) -> None:
        expected = self.state_keys(from_block)
        if not isinstance(state, dict) or set(state) != set(expected):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"forward_suffix(state, {from_block}) needs a forward_prefix "
                             f"state cut at block {from_block} (frames={self.frames!r}) with "
                             f"keys {sorted(expected)}, got {got}")
        for key in (k for k in expected if k.split("@")[0] == TOKENS_KEY):
            tokens = state[key]
            if tokens.ndim != 3 or tokens.shape[1:] != (1 + self.n_tokens,
                                                         self.config.embed_dim):
                raise ValueError(f"state[{key!r}] must be (B, {1 + self.n_tokens}, "
                                 f"{self.config.embed_dim}), got {tuple(tokens.shape)}")

    def _fused_state(self, state: dict[str, torch.Tensor], from_block: int,
                     ) -> tuple[dict[str, torch.Tensor], int]:
        """Check ``state``; under ``per-frame`` before the fusion block, run both streams up to
        it and fuse. Returns an ordinary state and the block to continue from."""
        self._check_split(from_block)
        self._check_state(state, from_block)
        if not (self.per_frame and from_block <= self.fusion_block):
            return state, from_block
        if from_block < self.fusion_block:
            batch = state[frame_key(TOKENS_KEY, FRAME_NAMES[0])].shape[0]
            joined = join_frames(state, [TOKENS_KEY])
            h = self.encoder.run_blocks(joined[TOKENS_KEY], from_block, self.fusion_block)
            state = {**state, **split_frames({TOKENS_KEY: h}, batch)}
        return self._fuse(state), self.fusion_block

    def suffix_features(self, state: dict[str, torch.Tensor], from_block: int,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks ``[from_block, n_blocks)``, final norm and fusion -> (CLS (B, 1, d),
        fused patch tokens (B, n_tokens, d)). Under ``per-frame`` the frame fusion runs first
        (at ``fusion_block``) when ``state`` is still per-frame."""
        state, from_block = self._fused_state(state, from_block)
        h = self.encoder.run_blocks(state[TOKENS_KEY], from_block, self.n_blocks)
        h = self.encoder.norm(h)
        skips = [state[skip_key(i)] for i in range(len(self.config.conv_chans))]
        patches = self.enc_fusion_dict[VIEW](skips, h[:, 1:])
        return h[:, :1], patches

    def forward_suffix(self, state: dict[str, torch.Tensor], from_block: int) -> torch.Tensor:
        """Logits (B, n_classes) from a :meth:`forward_prefix` state cut at ``from_block``."""
        inputs = self.head_inputs(state, from_block)
        per_head = torch.stack([self.pred_head_dict[VIEW](inputs[:, 0]),
                                self.pred_head_dict["cls"](inputs[:, 1])], dim=1)
        return per_head.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes): CineMA's ``reduce="all"`` (mean of patch-mean and CLS heads)."""
        return self.forward_suffix(self.forward_prefix(x, self.n_blocks), self.n_blocks)

    def embed_from_state(self, state: dict[str, torch.Tensor], from_block: int) -> torch.Tensor:
        """Pooled features (B, d) from a prefix state; see :meth:`embed`."""
        return self.raw_head_inputs(state, from_block).mean(dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, d): the average of the CLS token and the mean fused patch token,
        the two vectors the heads read (so a linear probe sees what the heads see)."""
        return self.embed_from_state(self.forward_prefix(x, self.n_blocks), self.n_blocks)


def build_convvit(size: str, *, image_size: tuple[int, int, int] | None = None,
                  n_frames: int = 2, n_classes: int = 2, seed: int | None = None,
                  frames: str = "repeat", **overrides: object) -> ConvViT:
    """A ConvViT of a named size (``tiny|base|large|huge`` as CineMA, or ``tutorial``).

    ``image_size`` defaults to the preset's (192x192x16 for CineMA's sizes); other config fields
    (e.g. ``conv_chans``, ``depth``) can be overridden for experiments. ``seed`` makes the random
    initialisation reproducible without touching the global RNG. ``frames``: ``repeat``
    (CineMA), ``per-frame`` or ``trainable-stem`` (see ``duallora.model.frames``).
    """
    cfg = get_preset(size).with_overrides(
        image_size=tuple(image_size) if image_size is not None else None,
        n_frames=n_frames, n_classes=n_classes, frames=frames, **overrides)
    if seed is None:
        return ConvViT(cfg, size=size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvViT(cfg, size=size)
