"""Model sizes (re-exported): declared on the ground floor, :mod:`duallora.base.presets`,
because ``TrainConfig`` checks ``--model-size`` against them without importing the model."""

from duallora.base.presets import (
    CINEMA_SIZES,
    PRESETS,
    TEST_SIZES,
    ConvViTConfig,
    get_preset,
)

__all__ = ["CINEMA_SIZES", "PRESETS", "TEST_SIZES", "ConvViTConfig", "get_preset"]
