"""``TrainConfig`` and its helpers (re-exported): declared on the ground floor,
:mod:`duallora.base.config`, so every layer (the results readers included) can read a run's
``config.json``. Kept because notebooks and users type ``duallora.federated.config``."""

from duallora.base.config import (
    LORA_TARGETS,
    STRATEGY_ALIASES,
    STRATEGY_NAMES,
    TrainConfig,
    quick_overrides,
    resolve,
    resume_conflicts,
)

__all__ = ["LORA_TARGETS", "STRATEGY_ALIASES", "STRATEGY_NAMES", "TrainConfig",
           "quick_overrides", "resolve", "resume_conflicts"]
