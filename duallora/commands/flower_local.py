"""``duallora flower-local``: the federated training over real Flower processes on this machine.

    duallora flower-local --clients N --data HARMONIZED_DIR --out RUN_DIR [--rounds R]
                          [--strategy S] [--seed S] [--quick] [--dp-noise-multiplier Z] [...]

Every option of `duallora train` that makes sense over Flower is accepted (all but the
site-specific --cache-dir: each site keeps its cache in its own state folder).

Starts one SuperLink and N SuperNodes (one per vendor) on 127.0.0.1, runs the kit's Flower app
(duallora/flower/app), writes RUN_DIR in the format of `duallora train`, and always stops every
process it started (also on errors and Ctrl-C). Node-local folders (private adapters, prefix
cache, logs) go to --work-dir (default: RUN_DIR/flower/work).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from duallora.base.config import STRATEGY_NAMES, TrainConfig
from duallora.commands.options import add_settings_options, explicit_values
from duallora.commands.train import add_run_options, check_resume, config_from_args
from duallora.federated.strategies import get_strategy
from duallora.flower.run_config import SITE_FIELDS
from duallora.flower.settings import FlowerSettings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("flower-local", help="run the federated training over a real "
                            "Flower SuperLink and SuperNodes on localhost", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, required=True,
                        help="number of sites (SuperNodes), one per vendor of the cohort")
    parser.add_argument("--data", type=Path, required=True, help="harmonized cohort folder")
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    federated = [name for name in STRATEGY_NAMES if get_strategy(name).federated]
    parser.add_argument("--strategy", default="med_duallora", metavar="NAME",
                        help=f"federated strategy (default med_duallora); one of "
                        f"{', '.join(federated)}")
    add_run_options(parser)
    parser.add_argument("--work-dir", type=Path,
                        help="node folders and Flower logs (default RUN_DIR/flower/work)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds before the run is stopped (default 3600)")
    parser.add_argument("--tls", action="store_true",
                        help="TLS and SuperNode authentication on loopback: make a CA, a "
                        "SuperLink certificate and a key pair per site (WORK_DIR/flower/tls), "
                        "register every site's key, refuse any other node")
    add_settings_options(parser, FlowerSettings, title="Flower deployment")
    add_settings_options(parser, TrainConfig, skip=SITE_FIELDS, title="training settings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError
    from duallora.flower.localhost.run import run_on_localhost
    from duallora.results.headline import headline

    if not args.data.is_dir():
        raise KitError(f"--data {args.data}: no such folder")
    deployment = FlowerSettings(**explicit_values(args, FlowerSettings))
    config = config_from_args(args, skip=SITE_FIELDS)
    check_resume(args, config, skip=SITE_FIELDS)  # the server records no site fields
    work_dir = args.work_dir or args.out / "flower" / "work"
    start = time.perf_counter()
    run = run_on_localhost(config, args.out, args.clients, work_dir=work_dir,
                           resume=args.resume, overwrite=args.overwrite, settings=deployment,
                           timeout=args.timeout, tls=args.tls)
    print(headline(run.run_dir))
    security = "TLS + SuperNode authentication" if args.tls else "insecure loopback"
    print(f"flower-local: {len(run.sites)} sites ({', '.join(run.sites)}), {security}, "
          f"{time.perf_counter() - start:.0f} s; run directory {run.run_dir}; "
          f"site folders {run.work_dir / 'sites'}")
    return 0
