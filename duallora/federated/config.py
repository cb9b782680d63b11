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

STRATEGY_NAMES = ("single_site", "centralized", "fedavg_full", "fedavg_lora", "ffa_lora",
                  "fedsa_lora", "med_duallora", "fedper", "fedavg_lora_ft", "feddpa")
LORA_TARGETS = ("attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2")
# Deprecated strategy names, accepted for one release: "local" now only means the paper's
# local adapter, so the strategy in which each site trains alone is "single_site".
STRATEGY_ALIASES = {"local": "single_site"}
LR_SCHEDULES = ("constant", "cosine")
PRIVATE_OPTIMIZERS = ("fresh", "persistent")
SELECTION_RULES = ("site-val-ba", "final", "pooled-val-loss")


def setting(default: Any, help: str, *, quick: Any = None, metavar: str | None = None,
            cli: bool = True, site: bool = False) -> Any:
    """A ``TrainConfig`` field with what the command lines need to offer it.

    ``help`` is the option's help text (the CLI name is the field name with dashes);
    ``quick`` the value ``--quick`` gives it (None: unchanged); ``cli=False`` for fields that
    commands declare themselves; ``site=True`` for fields each Flower site sets for itself.
    """
    meta = {"help": help, "quick": quick, "metavar": metavar, "cli": cli, "site": site}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """One run. Defaults are the tutorial default on the phantom cohort (CPU, minutes).

    Each field's metadata (``setting``) carries its help text and its ``--quick`` value, so
    ``duallora train``, ``duallora flower-local`` and the Flower run config are all generated
    from this one declaration. A config is validated when it is made.
    """

    data: str = setting("", "harmonized cohort folder", cli=False, site=True)
    strategy: str = setting("med_duallora", "training strategy", cli=False)
    seed: int = setting(0, "seed of everything random in the run")
    rounds: int = setting(8, "federated rounds", quick=2)
    local_epochs: int = setting(2, "client epochs per round", quick=1)
    batch_size: int = setting(8, "training batch size")
    lr: float = setting(2e-3, "AdamW learning rate")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    lr_from: str = setting("", "a tune-lr.json (or its folder): train with the learning rate "
                           "it chose for this strategy (the file is recorded here)",
                           metavar="FILE")
    lr_schedule: str = setting("constant", "learning rate over rounds: constant, or cosine "
                               "(lr * (1 + cos(pi (r - 1) / rounds)) / 2 in round r)",
                               metavar="constant|cosine")
    local_lr_mult: float = setting(1.0, "learning-rate multiplier of the private local adapter")
    local_weight_decay: float = setting(0.0, "AdamW weight decay of the private local adapter")
    private_optimizer: str = setting("fresh", "AdamW state of the private parameters: fresh "
                                     "each round (the usual FedAvg client), or persistent "
                                     "(kept on the site between rounds, in its private state)",
                                     metavar="fresh|persistent")
    selection: str = setting("site-val-ba", "which round's models are tested: site-val-ba "
                             "(each site's best round by its own validation balanced accuracy), "
                             "final (the last round, no selection), or pooled-val-loss (one "
                             "round for every site, by the pooled validation log loss)",
                             metavar="RULE")
    model_size: str = setting("tutorial", "model preset (tutorial, tiny, base, ...)")
    model_overrides: dict[str, Any] = setting(
        {}, 'model config changes as JSON, e.g. \'{"depth": 3}\' (experiments, tests)',
        metavar="JSON")
    fm: str = setting("phantom", "foundation weights: phantom (committed), none (random init) "
                      "or a file")
    frames: str = setting("repeat", "how ED and ES enter the model: repeat (CineMA's input), "
                          "per-frame (frozen one-frame prefix per frame, trained fusion) or "
                          "trainable-stem (first conv trained at a reduced LR)",
                          metavar="repeat|per-frame|trainable-stem")
    blocks: str = setting("last2", "adapted blocks: last2, lastK, all, or indices like 4,5",
                          metavar="SPEC")
    rank: int = setting(4, "LoRA rank (global adapter)")
    alpha: float = setting(8.0, "LoRA alpha (global adapter)")
    local_rank: int = setting(4, "rank of Med-DualLoRA's local adapter")
    local_alpha: float = setting(8.0, "alpha of Med-DualLoRA's local adapter")
    lora_dropout: float = setting(0.0, "LoRA dropout")
    targets: list[str] = setting(list(LORA_TARGETS), "comma-separated LoRA targets "
                                 f"({','.join(LORA_TARGETS)})", metavar="LIST")
    head: str = setting("shared", "shared, or private (ablation: the head never leaves the "
                        "site; 'local' is a deprecated alias)", metavar="shared|private")
    finetune_epochs: int = setting(0, "fedavg_lora_ft: local epochs each site fine-tunes the "
                                   "selected global adapter and head before its personalized "
                                   "test; 0 = --local-epochs (the budget of one round, fixed "
                                   "in advance, not tuned on test)")
    prox_lambda: float = setting(0.0, "fedavg_lora_ft: Ditto-style proximal weight lambda "
                                 "(loss + lambda/2 ||w - w_global||^2 while fine-tuning; 0: off)")
    dpa_local_weight: float = setting(0.5, "feddpa: weight of the local adapter while it "
                                      "trains (the frozen global adapter gets 1 - this)")
    dpa_max_weight: float = setting(0.5, "feddpa: the global adapter's weight at inference is "
                                    "this times the mean cosine similarity of the instance to "
                                    "--dpa-instances training instances (the local adapter "
                                    "gets 1 - that)")
    dpa_instances: int = setting(5, "feddpa: training instances each test instance is compared "
                                 "with (0: all of the site's training set)")
    class_weighting: bool = setting(True, "inverse-frequency class weights (NOR is the "
                                    "minority)")
    head_norm: bool = setting(True, "standardize the heads' inputs with pooled round-0 "
                              "statistics (see federated/head_norm)")
    augment: bool = setting(False, "MONAI intensity augmentation (disables the prefix cache)")
    prefix_cache: bool = setting(True, "cache the frozen prefix's output (exact, faster)")
    cache_dir: str = setting("", "prefix cache folder (default: <data dir>/prefix_cache)",
                             site=True)
    drop_prob: float = setting(0.0, "chance that a client drops out of a round")
    min_clients: int = setting(2, "fewer successful clients -> the round is skipped")
    fail_clients: list[str] = setting([], "fault injection: these clients raise (NAME or "
                                      "NAME@ROUND, comma-separated)", metavar="LIST")
    holdout_vendor: str = setting("", "vendor never trained on; the global model is evaluated "
                                  "on it", metavar="VENDOR")
    test_data: str = setting("", "harmonized test cohort that replaces every vendor's test "
                             "split (e.g. a v2 balanced test cohort); the training cohort's own "
                             "test subjects then join validation, and the cohort's "
                             "unseen-centre subjects are tested as the site 'unseen'",
                             metavar="DIR", site=True)
    cross_site: bool = setting(False, "also test every site's personalized model on every "
                               "other vendor's test split and on the unseen centre (in-process "
                               "only: it moves private adapters between sites)")
    max_train_per_client: int = setting(0, "cap on training subjects per client (0: all)",
                                        quick=12)
    eval_batch_size: int = setting(16, "evaluation batch size")
    bootstrap: int = setting(1000, "bootstrap replicates for confidence intervals", quick=200)
    quick: bool = setting(False, "tiny rounds and epochs so each strategy runs in seconds "
                          "(a record of --quick; the values it sets are in the other fields)",
                          cli=False)

    def __post_init__(self) -> None:
        if self.head == "local":  # deprecated alias (one release): "private" says what it is
            self.head = "private"
        if self.strategy in STRATEGY_ALIASES:  # deprecated names (one release)
            self.strategy = STRATEGY_ALIASES[self.strategy]
        self.validate()

    @property
    def finetune_budget(self) -> int:
        """Local epochs of ``fedavg_lora_ft``'s fine-tuning (``finetune_epochs``, 0: one round's
        ``local_epochs``)."""
        return self.finetune_epochs or self.local_epochs

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
        if self.head not in ("shared", "private"):
            raise KitError(f"--head must be 'shared' or 'private', not {self.head!r}")
        if self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            raise KitError("--rounds, --local-epochs and --batch-size must be at least 1")
        if not 0.0 <= self.drop_prob < 1.0:
            raise KitError(f"--drop-prob must be in [0, 1), not {self.drop_prob}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise KitError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, not "
                           f"{self.lr_schedule!r}")
        if self.private_optimizer not in PRIVATE_OPTIMIZERS:
            raise KitError(f"--private-optimizer must be one of {', '.join(PRIVATE_OPTIMIZERS)}"
                           f", not {self.private_optimizer!r}")
        if self.selection not in SELECTION_RULES:
            raise KitError(f"--selection must be one of {', '.join(SELECTION_RULES)}, not "
                           f"{self.selection!r}")
        if self.lr <= 0 or self.local_lr_mult <= 0:
            raise KitError("--lr and --local-lr-mult must be positive")
        if self.rank < 1 or self.local_rank < 1:
            raise KitError("LoRA ranks must be at least 1")
        if self.test_data and self.holdout_vendor:
            raise KitError("--test-data and --holdout-vendor cannot be combined (the test "
                           "cohort's unseen centre is the kit's hold-out there)")
        if self.finetune_epochs < 0 or self.prox_lambda < 0 or self.dpa_instances < 0:
            raise KitError("--finetune-epochs, --prox-lambda and --dpa-instances must not be "
                           "negative")
        if not 0.0 <= self.dpa_local_weight <= 1.0 or not 0.0 <= self.dpa_max_weight <= 1.0:
            raise KitError("--dpa-local-weight and --dpa-max-weight must lie in [0, 1]")
        bad = sorted(set(self.targets) - set(LORA_TARGETS))
        if bad:
            raise KitError(f"unknown LoRA target(s) {', '.join(bad)}; choose from "
                           f"{', '.join(LORA_TARGETS)}")


def quick_overrides() -> dict[str, Any]:
    """What ``--quick`` changes (each field's ``quick`` value): tiny rounds and epochs."""
    values = {f.name: f.metadata["quick"] for f in dataclasses.fields(TrainConfig)
              if f.metadata.get("quick") is not None}
    return {**values, "quick": True}


def resolve(explicit: dict[str, Any], *, quick: bool = False) -> TrainConfig:
    """The one place ``--quick`` is applied: defaults, then quick values, then every explicitly
    given value (explicit always wins). The result holds concrete values only."""
    values = {**(quick_overrides() if quick else {}), **explicit}
    if values.get("lr_from"):
        from duallora.federated.tune import read_choice

        if "lr" in explicit:
            raise KitError("give --lr or --lr-from, not both")
        values["lr"] = read_choice(Path(values["lr_from"]),
                                   values.get("strategy", TrainConfig().strategy))
    return TrainConfig.from_dict(values)
