"""``duallora tune-lr``: the same small learning-rate grid for a strategy, chosen on validation.

    duallora tune-lr --data HARMONIZED_DIR --strategy NAME --out DIR [--grid 5e-4,1e-3,2e-3,4e-3]
                     [--quick] [any option of duallora train]
    duallora train ... --lr-from DIR     # train with the chosen learning rate

Trains one run per grid value (``DIR/lr-<value>/``), then writes ``DIR/tune-lr.json``: every
value's final-round pooled validation log loss and the choice (the lowest; ties: the smaller).
Test data are never read. See ``duallora.federated.tune``.
"""

from __future__ import annotations

import argparse

from duallora.base.config import TrainConfig
from duallora.commands.options import add_settings_options
from duallora.commands.train import add_run_arguments, config_from_args


def _grid(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}"
                                         ) from None


def register(sub: argparse._SubParsersAction) -> None:
    from duallora.federated.tune import DEFAULT_GRID

    parser = sub.add_parser("tune-lr", help="choose a strategy's learning rate from a small "
                            "grid on the pooled validation loss", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, out_help="folder for the grid's runs")
    parser.add_argument("--grid", type=_grid, default=DEFAULT_GRID,
                        help="learning rates to try (default "
                        f"{','.join(f'{lr:g}' for lr in DEFAULT_GRID)})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny rounds/epochs (explicit options still win)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_options(parser, TrainConfig, skip=("lr", "lr_from"),
                         title="training settings (all but --lr)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError
    from duallora.federated.tune import CHOICE_FILE, tune_lr

    if not args.data.is_dir():
        raise KitError(f"--data {args.data}: no such folder")
    config = config_from_args(args, skip=("lr", "lr_from"))
    if not args.grid:
        raise KitError("--grid needs at least one learning rate")
    for lr in args.grid:  # each grid value is a --lr: the same range (finite, positive)
        TrainConfig.__dataclass_fields__["lr"].metadata["valid"].check("--grid", lr)
    record = tune_lr(config, args.grid, args.out, progress=not args.no_progress)
    losses = ", ".join(f"{lr}: {loss:.4f}" for lr, loss in record["val_loss"].items())
    print(f"tune-lr {config.strategy}: validation log loss {losses}; chosen lr "
          f"{record['chosen_lr']:g} ({args.out / CHOICE_FILE})")
    return 0
