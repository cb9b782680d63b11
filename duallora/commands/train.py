"""``duallora train``: one strategy on one harmonized cohort -> a run directory.

    duallora train --data HARMONIZED_DIR --strategy NAME --out RUN_DIR [--rounds R] [--seed S]
                   [--blocks SPEC] [--fm WEIGHTS] [--quick] [--resume] [...]

Every training setting (duallora.base.config.TrainConfig) is an option; --help lists them.

Strategies: single_site (was: local), centralized, fedavg_full, fedavg_lora, ffa_lora,
fedsa_lora, med_duallora.
The run directory holds config.json, metrics.csv, predictions.csv, comm.jsonl, checkpoints/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duallora.base.config import STRATEGY_NAMES, TrainConfig, resolve
from duallora.commands.options import add_settings_options, explicit_values


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train one strategy (federated or baseline) into a "
                            "run directory", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, out_help="run directory to write")
    add_run_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_options(parser, TrainConfig, title="training settings")
    parser.set_defaults(func=run)


def add_run_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """``--data``, ``--strategy`` and ``--out``: what every training command needs."""
    parser.add_argument("--data", type=Path, required=True, help="harmonized cohort folder")
    parser.add_argument("--strategy", required=True, metavar="NAME",
                        help=f"one of {', '.join(STRATEGY_NAMES)}")
    parser.add_argument("--out", type=Path, required=True, help=out_help)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--quick``, ``--resume`` and ``--overwrite``: shared by train and flower-local."""
    parser.add_argument("--quick", action="store_true",
                        help="tiny rounds/epochs so each strategy runs in seconds (explicit "
                        "options still win)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out (same results as unbroken)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


def _explicit(args: argparse.Namespace, skip: tuple[str, ...]) -> dict:
    return {**explicit_values(args, TrainConfig, skip), "data": str(args.data),
            "strategy": args.strategy}  # a deprecated name is mapped by TrainConfig


def config_from_args(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> TrainConfig:
    """The TrainConfig these options describe: ``--quick`` first, explicit options win."""
    return resolve(_explicit(args, skip), quick=bool(args.quick))


def check_resume(args: argparse.Namespace, config: TrainConfig,
                 skip: tuple[str, ...] = ()) -> None:
    """``--resume`` continues the recorded configuration: refuse, naming them, the options
    given now that say otherwise (they would be ignored). Options not given are not
    compared: ``--resume`` alone continues whatever was recorded."""
    from duallora.base.config import quick_overrides, resume_conflicts
    from duallora.base.rundir import RunDir
    from duallora.errors import KitError

    rundir = RunDir(args.out)
    if not (args.resume and rundir.config.is_file()):
        return
    given = set(_explicit(args, skip)) - set(skip)
    if args.quick:
        given |= set(quick_overrides())
    if "lr_from" in given:
        given.add("lr")
    conflicts = resume_conflicts(rundir.read_config(), config, given)
    if conflicts:
        raise KitError(f"--resume: {rundir.config} records other values for "
                       f"{'; '.join(conflicts)}. Resume without them, or start again with "
                       "--overwrite")


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError

    if not args.data.is_dir():
        raise KitError(f"--data {args.data}: no such folder")
    config = config_from_args(args)
    check_resume(args, config)
    if not args.resume:
        check_cohort(args.data)
    from duallora.federated.loop import run_training  # imports PEFT: only once input is sane
    from duallora.results.headline import failure_summary, headline

    out = run_training(config, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress)
    failed = failure_summary(out)
    if failed:
        raise KitError(failed)
    print(headline(out))
    return 0


def check_cohort(root: Path) -> None:
    """Fail fast (before loading models) on a folder without a usable metadata.csv."""
    from duallora.data import read_metadata
    from duallora.federated.cohort import check_metadata

    check_metadata(read_metadata(root), str(root / "metadata.csv"))
