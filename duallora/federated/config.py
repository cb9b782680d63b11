"""Everything that defines one training run, as one JSON-able dataclass.

The same object travels to every client function (in-process or under Flower) and is written to
``RUN_DIR/config.json``, so a run can be re-created (and resumed) from its folder alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duallora.errors import KitError

STRATEGY_NAMES = ("local", "centralized", "fedavg_full", "fedavg_lora", "ffa_lora", "fedsa_lora",
                  "med_duallora")
LORA_TARGETS = ("attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2")


@dataclass
class TrainConfig:
    """One run. Defaults are the tutorial default on the phantom cohort (CPU, minutes)."""

    data: str = ""
    strategy: str = "med_duallora"
    seed: int = 0
    rounds: int = 8
    local_epochs: int = 2
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    model_size: str = "tutorial"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. tiny test models
    fm: str = "phantom"                 # "phantom" (committed weights), "none" (random) or a path
    blocks: str = "last2"               # last2 | all | comma-separated indices
    rank: int = 4
    alpha: float = 8.0
    local_rank: int = 4
    local_alpha: float = 8.0
    lora_dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    head: str = "shared"                # shared | local (ablation: keep the head private)
    class_weighting: bool = True        # inverse-frequency class weights (NOR is the minority)
    head_norm: bool = True              # standardize the heads' inputs (see federated/head_norm)
    augment: bool = False               # MONAI intensity augmentation (disables the prefix cache)
    prefix_cache: bool = True
    cache_dir: str = ""                 # "" -> <data dir of the kit>/prefix_cache
    drop_prob: float = 0.0              # chance that a client drops out of a round
    min_clients: int = 2                # fewer successful clients -> the round is skipped
    fail_clients: list[str] = field(default_factory=list)  # test hook: these clients raise
    holdout_vendor: str = ""            # never trained on; the global model is evaluated on it
    max_train_per_client: int = 0       # 0 = all (quick mode trims)
    eval_batch_size: int = 16
    bootstrap: int = 1000
    quick: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KitError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise KitError(f"{path}: cannot read the run configuration ({err})") from err
        return cls.from_dict(values)

    def validate(self) -> None:
        """Reject impossible settings with one clear line (before any work starts)."""
        if self.strategy not in STRATEGY_NAMES:
            raise KitError(f"unknown strategy {self.strategy!r}; choose one of "
                           f"{', '.join(STRATEGY_NAMES)}")
        if self.head not in ("shared", "local"):
            raise KitError(f"--head must be 'shared' or 'local', not {self.head!r}")
        if self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            raise KitError("--rounds, --local-epochs and --batch-size must be at least 1")
        if not 0.0 <= self.drop_prob < 1.0:
            raise KitError(f"--drop-prob must be in [0, 1), not {self.drop_prob}")
        if self.rank < 1 or self.local_rank < 1:
            raise KitError("LoRA ranks must be at least 1")
        bad = sorted(set(self.targets) - set(LORA_TARGETS))
        if bad:
            raise KitError(f"unknown LoRA target(s) {', '.join(bad)}; choose from "
                           f"{', '.join(LORA_TARGETS)}")


def quick_overrides() -> dict[str, Any]:
    """What ``--quick`` changes: tiny rounds and epochs so each strategy runs in seconds."""
    return {"rounds": 2, "local_epochs": 1, "max_train_per_client": 12, "bootstrap": 200,
            "quick": True}
