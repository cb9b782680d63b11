"""``duallora flower-local``: the federated training over real Flower processes on this machine.

    duallora flower-local --clients N --data HARMONIZED_DIR --out RUN_DIR [--rounds R]
                          [--strategy S] [--seed S] [--quick] [--dp-noise-multiplier Z]

Starts one SuperLink and N SuperNodes (one per vendor) on 127.0.0.1, runs the kit's Flower app
(duallora/flower/app), writes RUN_DIR in the format of `duallora train`, and always stops every
process it started (also on errors and Ctrl-C). Node-local folders (private adapters, prefix
cache, logs) go to --work-dir (default: RUN_DIR/flower/work).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from duallora.commands.train import config_from_args
from duallora.federated.config import STRATEGY_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("flower-local", help="run the federated training over a real "
                            "Flower SuperLink and SuperNodes on localhost", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, required=True,
                        help="number of sites (SuperNodes), one per vendor of the cohort")
    parser.add_argument("--data", type=Path, required=True, help="harmonized cohort folder")
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    federated = [name for name in STRATEGY_NAMES if name not in ("local", "centralized")]
    parser.add_argument("--strategy", default="med_duallora", metavar="NAME",
                        help=f"federated strategy (default med_duallora); one of "
                        f"{', '.join(federated)}")
    parser.add_argument("--rounds", type=int, help="federated rounds (default 8; quick: 2)")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--blocks", help="adapted blocks: last2 (default), lastK, all, or 4,5")
    parser.add_argument("--fm", help="foundation weights: phantom (default), none, or a file")
    parser.add_argument("--quick", action="store_true", help="tiny rounds/epochs (as train)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--dp-noise-multiplier", type=float, default=0.0,
                        help="> 0: clip each site's update and add Gaussian noise to the "
                        "aggregate (central DP; default 0 = off)")
    parser.add_argument("--dp-clipping-norm", type=float, default=1.0,
                        help="L2 bound of one site's update (default 1.0)")
    parser.add_argument("--work-dir", type=Path,
                        help="node folders and Flower logs (default RUN_DIR/flower/work)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds before the run is stopped (default 3600)")
    parser.set_defaults(func=run)


def train_option_defaults() -> dict:
    """Every option of ``duallora train`` at its default, read from train's own parser, so its
    ``config_from_args`` (reused below) sees each option it reads, whatever options it gains."""
    from duallora.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    defaults = parser.parse_args(["train", "--data", ".", "--strategy", "med_duallora",
                                  "--out", "."])
    return vars(defaults)


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError
    from duallora.flower.localhost.run import run_on_localhost as run_local
    from duallora.results.headline import headline

    if not args.data.is_dir():
        raise KitError(f"--data {args.data}: no such folder")
    if args.dp_noise_multiplier < 0 or args.dp_clipping_norm <= 0:
        raise KitError("--dp-noise-multiplier must be >= 0 and --dp-clipping-norm > 0")
    config = config_from_args(argparse.Namespace(**{**train_option_defaults(), **vars(args)}))
    config.validate()
    work_dir = args.work_dir or args.out / "flower" / "work"
    start = time.perf_counter()
    local = run_local(config, args.out, args.clients, work_dir=work_dir, resume=args.resume,
                      overwrite=args.overwrite, dp_noise_multiplier=args.dp_noise_multiplier,
                      dp_clipping_norm=args.dp_clipping_norm, timeout=args.timeout)
    print(headline(local.run_dir))
    print(f"flower-local: {len(local.sites)} sites ({', '.join(local.sites)}), "
          f"{time.perf_counter() - start:.0f} s; run directory {local.run_dir}; "
          f"site folders {local.work_dir / 'sites'}")
    return 0
