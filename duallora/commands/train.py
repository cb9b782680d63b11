"""``duallora train``: one strategy on one harmonized cohort -> a run directory.

    duallora train --data HARMONIZED_DIR --strategy NAME --out RUN_DIR [--rounds R] [--seed S]
                   [--blocks SPEC] [--fm WEIGHTS] [--quick] [--resume]

Strategies: local, centralized, fedavg_full, fedavg_lora, ffa_lora, fedsa_lora, med_duallora.
The run directory holds config.json, metrics.csv, predictions.csv, comm.jsonl, checkpoints/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from duallora.federated.config import LORA_TARGETS, STRATEGY_NAMES

# option -> TrainConfig field, for options whose default is "keep the config default"
_OVERRIDABLE = {
    "rounds": "rounds", "seed": "seed", "blocks": "blocks", "fm": "fm",
    "local_epochs": "local_epochs", "batch_size": "batch_size", "lr": "lr", "rank": "rank",
    "alpha": "alpha", "local_rank": "local_rank", "local_alpha": "local_alpha",
    "lora_dropout": "lora_dropout", "head": "head", "drop_prob": "drop_prob",
    "min_clients": "min_clients", "holdout_vendor": "holdout_vendor",
    "model_size": "model_size", "cache_dir": "cache_dir", "bootstrap": "bootstrap",
    "max_train_per_client": "max_train_per_client",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train one strategy (federated or baseline) into a "
                            "run directory", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="harmonized cohort folder")
    parser.add_argument("--strategy", required=True, metavar="NAME",
                        help=f"one of {', '.join(STRATEGY_NAMES)}")
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument("--rounds", type=int, help="federated rounds (default 8; quick: 2)")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--blocks", help="adapted blocks: last2 (default), lastK, all, or 4,5")
    parser.add_argument("--fm", help="foundation weights: phantom (default), none, or a file")
    parser.add_argument("--quick", action="store_true",
                        help="tiny rounds/epochs so each strategy runs in seconds")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out (same results as unbroken)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--local-epochs", type=int, help="client epochs per round (default 2)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--rank", type=int, help="LoRA rank (global adapter)")
    parser.add_argument("--alpha", type=float, help="LoRA alpha (global adapter)")
    parser.add_argument("--local-rank", type=int, help="Med-DualLoRA local adapter rank")
    parser.add_argument("--local-alpha", type=float, help="Med-DualLoRA local adapter alpha")
    parser.add_argument("--lora-dropout", type=float)
    parser.add_argument("--targets",
                        help=f"comma-separated LoRA targets ({','.join(LORA_TARGETS)})")
    parser.add_argument("--head", choices=["shared", "local"], help="share or keep the head")
    parser.add_argument("--augment", action="store_true", help="intensity augmentation "
                        "(disables the prefix cache)")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="always run the full forward pass")
    parser.add_argument("--no-head-norm", action="store_true",
                        help="heads read raw features (no round-0 standardization)")
    parser.add_argument("--cache-dir", help="prefix cache folder (default data/prefix_cache)")
    parser.add_argument("--drop-prob", type=float, help="chance a client misses a round")
    parser.add_argument("--min-clients", type=int, help="fewer answers -> the round is skipped")
    parser.add_argument("--holdout-vendor", help="vendor never trained on; the global model is "
                        "evaluated on it")
    parser.add_argument("--model-size", help="model preset (default tutorial)")
    parser.add_argument("--max-train-per-client", type=int, help="cap training subjects")
    parser.add_argument("--bootstrap", type=int, help="bootstrap replicates for CIs")
    parser.add_argument("--model-overrides", metavar="JSON",
                        help='model config changes, e.g. \'{"depth": 3}\' (experiments, tests)')
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig these options describe (quick mode first, explicit options win)."""
    from duallora.errors import KitError
    from duallora.federated.config import TrainConfig, quick_overrides

    values: dict[str, Any] = {"data": str(args.data), "strategy": args.strategy}
    if args.quick:
        values.update(quick_overrides())
    for option, field_name in _OVERRIDABLE.items():
        value = getattr(args, option)
        if value is not None:
            values[field_name] = value
    if args.targets:
        values["targets"] = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.model_overrides:
        try:
            values["model_overrides"] = json.loads(args.model_overrides)
        except json.JSONDecodeError as err:
            raise KitError(f"--model-overrides is not valid JSON ({err})") from None
    values["augment"] = bool(args.augment)
    values["prefix_cache"] = not args.no_prefix_cache
    values["head_norm"] = not args.no_head_norm
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError

    if not args.data.is_dir():
        raise KitError(f"--data {args.data}: no such folder")
    config = config_from_args(args)
    config.validate()
    if not args.resume:
        check_cohort(args.data)
    from duallora.federated.loop import run_training  # imports PEFT: only once input is sane
    from duallora.results.headline import headline

    out = run_training(config, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress)
    print(headline(out))
    return 0


def check_cohort(root: Path) -> None:
    """Fail fast (before loading models) on a folder without a usable metadata.csv."""
    from duallora.data import read_metadata
    from duallora.federated.cohort import check_metadata

    check_metadata(read_metadata(root), str(root / "metadata.csv"))
