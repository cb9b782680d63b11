"""Everything that defines one training run, as one JSON-able dataclass.

The same object travels to every client function (in-process or under Flower) and is written to
``RUN_DIR/config.json``, so a run can be re-created (and resumed) from its folder alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duallora.base.presets import FRAME_MODES, PRESETS
from duallora.base.ranges import (
    ANY,
    NON_EMPTY,
    SEED,
    Valid,
    between,
    check_type,
    matching,
    one_of,
)
from duallora.errors import KitError

STRATEGY_NAMES = ("single_site", "centralized", "fedavg_full", "fedavg_lora", "ffa_lora",
                  "fedsa_lora", "med_duallora", "fedper", "fedavg_lora_ft", "feddpa",
                  "orthogonal_duallora", "fedalt")
LORA_TARGETS = ("attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2")
# Deprecated strategy names, accepted for one release: "local" now only means the paper's
# local adapter, so the strategy in which each site trains alone is "single_site".
STRATEGY_ALIASES = {"local": "single_site"}
LR_SCHEDULES = ("constant", "cosine")
PRIVATE_OPTIMIZERS = ("fresh", "persistent")
SELECTION_RULES = ("site-val-ba", "final", "pooled-val-loss")
PRECISIONS = ("fp32", "bf16", "fp16")
_DEVICE_SPEC = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
# ``--blocks`` syntax (resolve_blocks checks the indices against the model's depth when the
# model is built, which is still before --overwrite removes anything)
BLOCKS_SPEC = r"\s*(?i:all|last[1-9]\d*|\d+(\s*,\s*\d+)*)\s*"
# Generous but finite upper bounds: far beyond any sensible run, low enough that a typo
# (an extra zero or three) is refused instead of running for days or exhausting memory.
MAX_ROUNDS, MAX_EPOCHS, MAX_BATCH, MAX_RANK, MAX_BOOTSTRAP = 10_000, 1_000, 4_096, 1_024, 10**6
# What ``duallora tune-lr`` writes (``federated.tune``) and ``--lr-from`` reads (``read_choice``)
CHOICE_FILE = "tune-lr.json"


def check_device_spec(spec: str) -> None:
    """Reject a malformed ``--device`` before any work (whether the GPU exists is checked
    when the model is built, ``base.device.resolve_device``)."""
    if not _DEVICE_SPEC.match(spec):
        raise KitError(f"--device must be auto, cpu, cuda or cuda:N, not {spec!r}")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise KitError(f"--precision must be one of {', '.join(PRECISIONS)}, not "
                       f"{precision!r}")


def setting(default: Any, help: str, *, valid: Valid = ANY, quick: Any = None,
            metavar: str | None = None, cli: bool = True, site: bool = False) -> Any:
    """A ``TrainConfig`` field with what the command lines need to offer it.

    ``help`` is the option's help text (the CLI name is the field name with dashes);
    ``valid`` the values it accepts (``base.ranges``), checked by ``TrainConfig.validate``
    whichever way the value arrived; ``quick`` the value ``--quick`` gives it (None:
    unchanged); ``cli=False`` for fields that commands declare themselves; ``site=True`` for
    fields each Flower site sets for itself.
    """
    meta = {"help": help, "valid": valid, "quick": quick, "metavar": metavar, "cli": cli,
            "site": site}
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
    strategy: str = setting("med_duallora", "training strategy", cli=False,
                            valid=one_of(STRATEGY_NAMES, "strategy"))
    seed: int = setting(0, "seed of everything random in the run", valid=SEED)
    rounds: int = setting(8, "federated rounds", quick=2, valid=between(1, MAX_ROUNDS))
    local_epochs: int = setting(2, "client epochs per round", quick=1, valid=between(1, MAX_EPOCHS))
    batch_size: int = setting(8, "training batch size", valid=between(1, MAX_BATCH))
    lr: float = setting(2e-3, "AdamW learning rate", valid=between(0, 1, open_lo=True))
    weight_decay: float = setting(0.0, "AdamW weight decay", valid=between(0, 1))
    lr_from: str = setting("", "a tune-lr.json (or its folder): train with the learning rate "
                           "it chose for this strategy (the file is recorded here)",
                           metavar="FILE")
    lr_schedule: str = setting("constant", "learning rate over rounds: constant, or cosine "
                               "(lr * (1 + cos(pi (r - 1) / rounds)) / 2 in round r)",
                               metavar="constant|cosine", valid=one_of(LR_SCHEDULES))
    local_lr_mult: float = setting(1.0, "learning-rate multiplier of the private local adapter",
                                   valid=between(0, 1000, open_lo=True))
    local_weight_decay: float = setting(0.0, "AdamW weight decay of the private local adapter",
                                        valid=between(0, 1))
    private_optimizer: str = setting("fresh", "AdamW state of the private parameters: fresh "
                                     "each round (the usual FedAvg client), or persistent "
                                     "(kept on the site between rounds, in its private state)",
                                     metavar="fresh|persistent", valid=one_of(PRIVATE_OPTIMIZERS))
    selection: str = setting("site-val-ba", "which round's models are tested: site-val-ba "
                             "(each site's best round by its own validation balanced accuracy), "
                             "final (the last round, no selection), or pooled-val-loss (one "
                             "round for every site, by the pooled validation log loss)",
                             metavar="RULE", valid=one_of(SELECTION_RULES))
    model_size: str = setting("tutorial", "model preset (tutorial, tiny, base, ...)",
                              valid=one_of(tuple(PRESETS)))
    model_overrides: dict[str, Any] = setting(
        {}, 'model config changes as JSON, e.g. \'{"depth": 3}\' (experiments, tests)',
        metavar="JSON")
    fm: str = setting("phantom", "foundation weights: phantom (committed), none (random init) "
                      "or a file", valid=NON_EMPTY)
    frames: str = setting("repeat", "how ED and ES enter the model: repeat (CineMA's input), "
                          "per-frame (frozen one-frame prefix per frame, trained fusion) or "
                          "trainable-stem (first conv trained at a reduced LR)",
                          metavar="repeat|per-frame|trainable-stem", valid=one_of(FRAME_MODES))
    blocks: str = setting("last2", "adapted blocks: last2, lastK, all, or indices like 4,5",
                          metavar="SPEC",
                          valid=matching(BLOCKS_SPEC, "last2, lastK, all or indices like 4,5"))
    rank: int = setting(4, "LoRA rank (global adapter)", valid=between(1, MAX_RANK))
    alpha: float = setting(8.0, "LoRA alpha (global adapter)",
                           valid=between(0, 10_000, open_lo=True))
    local_rank: int = setting(4, "rank of Med-DualLoRA's local adapter", valid=between(1, MAX_RANK))
    local_alpha: float = setting(8.0, "alpha of Med-DualLoRA's local adapter",
                                 valid=between(0, 10_000, open_lo=True))
    lora_dropout: float = setting(0.0, "LoRA dropout", valid=between(0, 1, open_hi=True))
    targets: list[str] = setting(list(LORA_TARGETS), "comma-separated LoRA targets "
                                 f"({','.join(LORA_TARGETS)})", metavar="LIST",
                                 valid=Valid(choices=LORA_TARGETS, non_empty=True))
    head: str = setting("shared", "shared, or private (ablation: the head never leaves the "
                        "site; 'local' is a deprecated alias)", metavar="shared|private",
                        valid=one_of(("shared", "private")))
    finetune_epochs: int = setting(0, "fedavg_lora_ft: local epochs each site fine-tunes the "
                                   "selected global adapter and head before its personalized "
                                   "test; 0 = --local-epochs (the budget of one round, fixed "
                                   "in advance, not tuned on test)", valid=between(0, MAX_EPOCHS))
    prox_lambda: float = setting(0.0, "fedavg_lora_ft: Ditto-style proximal weight lambda "
                                 "(loss + lambda/2 ||w - w_global||^2 while fine-tuning; 0: off)",
                                 valid=between(0, 1e6))
    dpa_local_weight: float = setting(0.5, "feddpa: weight of the local adapter while it "
                                      "trains (the frozen global adapter gets 1 - this)",
                                      valid=between(0, 1))
    dpa_max_weight: float = setting(0.5, "feddpa: the global adapter's weight at inference is "
                                    "this times the mean cosine similarity of the instance to "
                                    "--dpa-instances training instances (the local adapter "
                                    "gets 1 - that)", valid=between(0, 1))
    dpa_instances: int = setting(5, "feddpa: training instances each test instance is compared "
                                 "with (0: all of the site's training set)",
                                 valid=between(0, 10**6))
    orth_weight: float = setting(1.0, "orthogonal_duallora: weight of the overlap penalty "
                                 "(mean over adapted layers of ||A_g A_l^T||_F^2 / "
                                 "(||A_g||_F^2 ||A_l||_F^2), which lies in [0, 1])",
                                 valid=between(0, 1e6))
    class_weighting: bool = setting(True, "inverse-frequency class weights (NOR is the "
                                    "minority)")
    head_norm: bool = setting(True, "standardize the heads' inputs with pooled round-0 "
                              "statistics (see federated/head_norm)")
    augment: bool = setting(False, "MONAI intensity augmentation (disables the prefix cache)")
    prefix_cache: bool = setting(True, "cache the frozen prefix's output (exact, faster)")
    cache_dir: str = setting("", "prefix cache folder (default: <data dir>/prefix_cache)",
                             site=True)
    device: str = setting("auto", "where to compute: auto (CUDA when a GPU is visible, else "
                          "cpu), cpu, cuda or cuda:N (over Flower a site's node config "
                          "'device' overrides it)", metavar="auto|cpu|cuda[:N]",
                          valid=matching(_DEVICE_SPEC.pattern, "auto, cpu, cuda or cuda:N"))
    precision: str = setting("fp32", "autocast precision of forward/backward: fp32, bf16 or "
                             "fp16 (weights, optimizer state and payloads stay fp32; the "
                             "prefix cache is stored in this precision)",
                             metavar="fp32|bf16|fp16", valid=one_of(PRECISIONS))
    drop_prob: float = setting(0.0, "chance that a client drops out of a round",
                               valid=between(0, 1, open_hi=True))
    min_clients: int = setting(2, "fewer successful clients -> the round is skipped",
                               valid=between(1, 1000))
    fail_clients: list[str] = setting([], "fault injection: these clients raise (NAME or "
                                      "NAME@ROUND, comma-separated)", metavar="LIST")
    holdout_vendor: str = setting("", "vendor never trained on; the global model is evaluated "
                                  "on it (with --test-data: on its test-cohort subjects, "
                                  "split test_global; in-process only)", metavar="VENDOR")
    test_data: str = setting("", "harmonized test cohort that replaces every vendor's test "
                             "split (e.g. a v2 balanced test cohort); the training cohort's own "
                             "test subjects then join validation, and the cohort's "
                             "unseen-centre subjects are tested as the site 'unseen'",
                             metavar="DIR", site=True)
    cross_site: bool = setting(False, "also test every site's personalized model on every "
                               "other vendor's test split and on the unseen centre (in-process "
                               "only: it moves private adapters between sites)")
    max_train_per_client: int = setting(0, "cap on training subjects per client (0: all)",
                                        quick=12, valid=between(0, 10**7))
    eval_batch_size: int = setting(16, "evaluation batch size", valid=between(1, MAX_BATCH))
    bootstrap: int = setting(1000, "bootstrap replicates for confidence intervals", quick=200,
                             valid=between(0, MAX_BOOTSTRAP))
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
        """Reject impossible settings with one clear line (before any work starts).

        Every field is checked against its declaration (its kind, and ``valid``: range,
        choices, syntax), so a value from ``config.json`` or a Flower run config is held to the
        same rules as one typed on the command line; then the rules that tie fields together.
        """
        for spec in dataclasses.fields(self):
            option = f"--{spec.name.replace('_', '-')}"
            value = getattr(self, spec.name)
            check_type(option, value, _default_of(spec))
            spec.metadata["valid"].check(option, value)


def _default_of(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory()  # type: ignore[misc]


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
        if "lr" in explicit:
            raise KitError("give --lr or --lr-from, not both")
        values["lr"] = read_choice(Path(values["lr_from"]),
                                   values.get("strategy", TrainConfig().strategy))
    return TrainConfig.from_dict(values)


# Fields holding paths: a resumed run may name the same file by another relative path
_PATH_FIELDS = ("data", "test_data", "cache_dir", "lr_from")
_NOT_PATHS = ("phantom", "none")  # --fm values that are not files


def _same(name: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    paths = name in _PATH_FIELDS or (name == "fm" and a not in _NOT_PATHS
                                     and b not in _NOT_PATHS)
    if paths and isinstance(a, str) and isinstance(b, str) and a and b:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return False


def resume_conflicts(recorded: TrainConfig, given: TrainConfig,
                     names: Iterable[str]) -> list[str]:
    """``--option value (recorded value)`` for each of ``names`` (the options given now) whose
    value differs from the recorded run's: ``--resume`` continues the recorded configuration,
    so an option that says otherwise would be silently ignored."""
    def shown(value: Any) -> str:
        return ",".join(value) if isinstance(value, list) else json.dumps(value) \
            if isinstance(value, dict) else str(value)

    conflicts = []
    for name in sorted(set(names)):
        now, then = getattr(given, name), getattr(recorded, name)
        if not _same(name, now, then):
            conflicts.append(f"--{name.replace('_', '-')} {shown(now)} (recorded {shown(then)})")
    return conflicts


def read_choice(path: Path, strategy: str) -> float:
    """The learning rate a ``tune-lr.json`` chose for ``strategy`` (refuses another strategy's)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHOICE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise KitError(f"--lr-from {path}: cannot read the learning-rate choice ({err})") from None
    if record.get("strategy") != strategy:
        raise KitError(f"--lr-from {path} was tuned for {record.get('strategy')!r}, not "
                       f"{strategy!r}")
    return float(record["chosen_lr"])
