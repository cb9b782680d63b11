"""``duallora pretrain``: MAE-pretrain the ConvViT encoder on an unlabelled phantom population.

Either pass a harmonized cohort (``--data``), or let the command build the phantom "population"
cohort itself (``--population N``: N mostly healthy subjects from all vendors, disjoint from the
federated clients, harmonized into ``--cache``), or pass a v2 frames population
(``--frames-population DIR`` from ``python -m data_prep population``: every cine frame of many
subjects from every v2 centre). The committed phantom FM was made with ``--population``; its
``duallora/weights/*.json`` record holds the exact command. Writes OUT (.safetensors), OUT.json
(how it was made), OUT_loss.csv and OUT_loss.png.

Long runs go in chunks: ``--checkpoint PATH --stop-after-minutes M`` stops after the step that
crosses M minutes and saves the state; the same command with ``--resume`` continues it, and
the result is the one an uninterrupted run gives.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from duallora import paths
from duallora.errors import KitError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pretrain", help="MAE-pretrain a foundation model on phantoms",
                            description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="harmonized cohort (metadata.csv + volumes/)")
    source.add_argument("--population", type=int, metavar="N",
                        help="build and harmonize a phantom population of N subjects")
    source.add_argument("--frames-population", type=Path, metavar="DIR",
                        help="v2 frames population (python -m data_prep population): every "
                        "cine frame is a sample")
    parser.add_argument("--cache", type=Path, default=paths.default_data_dir(),
                        help="where --population writes its cohort (default: data/)")
    parser.add_argument("--out", type=Path, required=True, help="weights file (.safetensors)")
    # Defaults mirror duallora.model.pretrain.PretrainConfig (not imported: keeps --help fast).
    parser.add_argument("--size", default="tutorial",
                        help="model preset: tutorial (default), tiny, base, large, huge")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of model, masks and order")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=float, default=1,
                        help="linear learning-rate warm-up, in epochs (fractions allowed; "
                        "default 1)")
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="share of hidden tokens")
    parser.add_argument("--mask-slab", type=int, default=1,
                        help="hide runs of this many slices together (1: per token, as CineMA; "
                             "the token grid's depth: whole tubes)")
    parser.add_argument("--norm-target", action="store_true",
                        help="predict patches standardised per patch (MAE's normalised pixels)")
    parser.add_argument("--anatomy-weight", type=float, default=0.0, metavar="W",
                        help="with --frames-population: add W x the MSE of a linear head "
                        "predicting each frame's per-slice LV/MYO/RV areas from the pooled "
                        "encoder tokens (default 0: pure MAE; the head is not saved)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                        help="training-state file for chunked runs (model, optimizer, "
                        "generator, position, loss log)")
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                        help="also save the checkpoint every N steps (default 0: only when "
                        "stopping and at the end)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --checkpoint (refused if its settings differ)")
    parser.add_argument("--stop-after-minutes", type=float, default=None, metavar="M",
                        help="stop after the step that crosses M minutes, saving --checkpoint; "
                        "rerun with --resume to continue")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where to train: auto (CUDA when a GPU is visible, else cpu), cpu, "
                        "cuda or cuda:N; batches and masks stay seeded on the CPU (default: "
                        "auto)")
    parser.add_argument("--precision", default="fp32", metavar="fp32|bf16|fp16",
                        help="autocast precision of the forward pass; weights and optimizer "
                        "state stay fp32 (default: fp32)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def build_population(n_subjects: int, cache: Path, seed: int, progress: bool) -> Path:
    """Phantom population cohort (raw M&Ms-2 layout), harmonized; reused when already built."""
    from data_prep.harmonize import harmonize_datasets
    from data_prep.phantoms import write_population_cohort

    base = Path(cache) / f"population_n{n_subjects}_seed{seed}"
    harmonized = base / "harmonized"
    if not (harmonized / "metadata.csv").is_file():
        root = write_population_cohort(base / "raw", n_subjects=n_subjects, seed=seed)
        harmonize_datasets(mnms2=root, out=harmonized, seed=seed, progress=progress)
    return harmonized


def check_chunk_options(args: argparse.Namespace) -> None:
    """The options of chunked runs and of the anatomy head, each refused on its own line."""
    for option, value in (("--warmup-epochs", args.warmup_epochs),
                          ("--anatomy-weight", args.anatomy_weight),
                          ("--stop-after-minutes", args.stop_after_minutes)):
        if value is not None and not math.isfinite(value):
            raise KitError(f"{option} must be a finite number, got {value}")
    if args.warmup_epochs < 0:
        raise KitError(f"--warmup-epochs must be at least 0, got {args.warmup_epochs:g}")
    if args.anatomy_weight < 0:
        raise KitError(f"--anatomy-weight must be at least 0, got {args.anatomy_weight:g}")
    if args.anatomy_weight > 0 and args.frames_population is None:
        raise KitError("--anatomy-weight needs --frames-population (its per-slice areas)")
    if args.checkpoint_every < 0:
        raise KitError(f"--checkpoint-every must be at least 0, got {args.checkpoint_every}")
    if args.stop_after_minutes is not None and args.stop_after_minutes < 0:
        raise KitError(f"--stop-after-minutes must be at least 0, got "
                       f"{args.stop_after_minutes:g}")
    if args.checkpoint is None:
        for option, given in (("--resume", args.resume),
                              ("--checkpoint-every", args.checkpoint_every > 0),
                              ("--stop-after-minutes", args.stop_after_minutes is not None)):
            if given:
                raise KitError(f"{option} needs --checkpoint PATH")


def _continue_command(command: str) -> str:
    return command if "--resume" in command.split() else command + " --resume"


def run(args: argparse.Namespace) -> int:
    from duallora.base.presets import PRESETS
    from duallora.model.pretrain import Chunking, PretrainConfig, pretrain

    if args.size not in PRESETS:
        raise KitError(f"unknown --size {args.size!r}; choose one of {', '.join(PRESETS)}")
    if args.epochs < 1 or args.batch_size < 1:
        raise KitError("--epochs and --batch-size must be at least 1")
    check_chunk_options(args)
    if not 0.0 <= args.mask_ratio < 1.0:
        raise KitError(f"--mask-ratio must be in [0, 1), got {args.mask_ratio}")
    depth = PRESETS[args.size].grid_size[2]
    if args.mask_slab < 1 or depth % args.mask_slab:
        raise KitError(f"--mask-slab must divide the {args.size} token grid's depth ({depth} "
                       f"slices), got {args.mask_slab}")
    from duallora.base.config import check_device_spec, check_precision

    check_device_spec(args.device)
    check_precision(args.precision)
    source = "harmonized"
    if args.frames_population is not None:
        data = args.frames_population
        source = "frames"
        info = {"source": "v2 frames population given with --frames-population"}
    elif args.population is not None:
        if args.population < 1:
            raise KitError("--population must be at least 1 subject")
        data = build_population(args.population, args.cache, args.seed, not args.no_progress)
        info = {"source": "phantom population (data_prep.phantoms.write_population_cohort)",
                "population_subjects": args.population, "population_seed": args.seed}
    else:
        data = args.data
        if not (data / "metadata.csv").is_file():
            raise KitError(f"{data}: not a harmonized cohort (metadata.csv missing); build one "
                           f"with `python -m data_prep harmonize` or use --population N")
        info = {"source": "harmonized cohort given with --data"}
    cfg = PretrainConfig(size=args.size, epochs=args.epochs, seed=args.seed,
                         batch_size=args.batch_size, lr=args.lr, mask_ratio=args.mask_ratio,
                         mask_slab=args.mask_slab, norm_target=args.norm_target,
                         warmup_epochs=args.warmup_epochs, anatomy_weight=args.anatomy_weight)
    argv = list(sys.argv[1:]) if sys.argv[1:2] == ["pretrain"] else ["pretrain", "..."]
    command = "python -m duallora " + " ".join(shlex.quote(a) for a in argv)
    chunking = Chunking(checkpoint=args.checkpoint, every=args.checkpoint_every,
                        resume=args.resume, stop_after_minutes=args.stop_after_minutes)
    record = pretrain(data, args.out, cfg, command=command, data_info=info,
                      progress=not args.no_progress, device=args.device,
                      precision=args.precision, source=source, chunking=chunking)
    if record.get("stopped"):
        print(f"stopped after step {record['steps_done']} of {record['total_steps']} (chunk "
              f"{record['chunks']}), state saved to {record['checkpoint']}; continue with: "
              f"{_continue_command(command)}")
        return 0
    print(f"pretrained {cfg.size} on {record['data']['n_volumes']} volumes in "
          f"{record['wall_time_s']:.0f} s; final loss {record['final_loss']:.4f} -> {args.out}")
    return 0
