"""Model sizes: CineMA's size table, the kit's CPU "tutorial" preset and the tests' "test-tiny".

Also the names of the ``frames`` model option (how ED and ES enter the model; what each one
does is ``duallora.model.frames``). Both live on the ground floor because ``TrainConfig``
checks ``--model-size`` and ``--frames`` against them without importing the model (torch).
``duallora.base.presets`` re-exports this module.

Every preset keeps CineMA's structure (conv stem with patch 4x4x1 then two 2x2x1 stages of two
masked conv blocks each, linear patch embedding, CLS-token ViT, multi-scale fusion, two heads);
only widths, depth and the input size change.

Why the tutorial preset looks the way it does (CPU, 2 cores, the whole notebook series with seven
federated strategies in well under 30 minutes):

- ``image_size=(64, 64, 16)`` from a ``crop_size`` of 128 mm: the harmonized plane is 192x192 mm
  at 1 mm; the heart occupies the central ~100 mm, so a 128 mm centre crop keeps the whole heart
  plus margin, resampled to 2 mm pixels. All 16 slices (10 mm) stay, since apex-to-base coverage
  is what separates most pathologies. With the 16x16x1 effective patch this gives 4x4x16 = 256
  tokens, 9x fewer than CineMA's 2,304, so attention stays cheap.
- ``conv_chans=(16, 32)``: the stem runs at full resolution and dominates CPU time; 16/32
  channels (CineMA: 64/128) are enough for the smooth phantom anatomy.
- ``embed_dim=96, depth=6, n_heads=4``: wide enough for the phantoms' shape and motion cues,
  deep enough that "adapt the last two blocks" (the paper's cheap setting) still leaves a frozen
  prefix of four blocks; 96 divides into three even sin-cos axis groups of 32 channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

REPEAT, PER_FRAME, TRAINABLE_STEM = "repeat", "per-frame", "trainable-stem"
FRAME_MODES = (REPEAT, PER_FRAME, TRAINABLE_STEM)


def check_frames(frames: str) -> str:
    if frames not in FRAME_MODES:
        raise ValueError(f"frames must be one of {', '.join(FRAME_MODES)}, got {frames!r}")
    return frames


@dataclass(frozen=True)
class ConvViTConfig:
    """Everything that fixes a ConvViT's parameter shapes (plus the input size it expects)."""

    embed_dim: int
    depth: int
    n_heads: int
    image_size: tuple[int, int, int] = (192, 192, 16)
    crop_size: int = 192  # mm of the harmonized 192x192 plane fed (resized) to the model
    conv_chans: tuple[int, ...] = (64, 128)
    conv_n_blocks: int = 2
    patch_size: tuple[int, int, int] = (4, 4, 1)
    scale_factor: tuple[int, int, int] = (2, 2, 1)
    mlp_ratio: int = 4
    n_frames: int = 2
    n_classes: int = 2
    frames: str = REPEAT  # how ED and ES enter the model; see duallora.model.frames

    def __post_init__(self) -> None:
        check_frames(self.frames)

    def with_overrides(self, **overrides: object) -> ConvViTConfig:
        """A copy with some fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def effective_patch(self) -> tuple[int, int, int]:
        """Voxels covered by one ViT token: patch_size times scale_factor per conv stage."""
        size = list(self.patch_size)
        for _ in self.conv_chans:
            size = [s * f for s, f in zip(size, self.scale_factor, strict=True)]
        return (size[0], size[1], size[2])

    @property
    def grid_size(self) -> tuple[int, int, int]:
        eff = self.effective_patch
        return (self.image_size[0] // eff[0], self.image_size[1] // eff[1],
                self.image_size[2] // eff[2])


PRESETS: dict[str, ConvViTConfig] = {
    # CineMA's sizes (cinema/vit.py get_vit_config; conv stem as in its configs).
    "tiny": ConvViTConfig(embed_dim=16, depth=1, n_heads=2),
    "base": ConvViTConfig(embed_dim=768, depth=12, n_heads=12),
    "large": ConvViTConfig(embed_dim=1024, depth=24, n_heads=16),
    "huge": ConvViTConfig(embed_dim=1280, depth=32, n_heads=16),
    # The kit's CPU preset (see the module docstring for the reasoning).
    "tutorial": ConvViTConfig(embed_dim=96, depth=6, n_heads=4, image_size=(64, 64, 16),
                              crop_size=128, conv_chans=(16, 32)),
    # The tests' model: the tutorial preset shrunk until a federated round takes well under a
    # second (three blocks, so "last2" still leaves a frozen prefix). Not a size to train with.
    "test-tiny": ConvViTConfig(embed_dim=32, depth=3, n_heads=2, image_size=(32, 32, 16),
                               crop_size=128, conv_chans=(8, 8)),
}

CINEMA_SIZES = ("tiny", "base", "large", "huge")
# Presets that exist for the test suite only; tables of "the model sizes" leave them out.
TEST_SIZES = ("test-tiny",)


def get_preset(size: str) -> ConvViTConfig:
    if size not in PRESETS:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[size]
