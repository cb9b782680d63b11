"""``python -m data_prep``: build the phantom cohort, its headroom report, and harmonize.

    python -m data_prep phantoms  --out DIR [--scale F] [--seed N] [--shift SPEC|CELL]
                                  [--generator v2|v1] [--test-per-vendor N] [--val-per-vendor N]
    python -m data_prep headroom  [--seed N] [--shift SPEC|CELL] [--out DIR]
                                  [--images --train-per-vendor N --test-per-vendor N
                                   --features pixels,fm --weights W.safetensors]
    python -m data_prep harmonize [--acdc DIR] [--mnms DIR] [--mnms2 DIR] --out DIR [--seed N]
    python -m data_prep population --out DIR --subjects N [--seed N] [--centre-sets K]
                                   [--size tutorial] [--shard-subjects N] [--workers N]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from duallora.base.command_line import OneLineParser, run_cli

# CPU-seconds per subject of `python -m data_prep phantoms --scale 0.1` (88 training + 125 test
# subjects: 228 CPU-s, 2.6 min on 2 cores; docs/PHANTOMS.md): a training subject renders its
# full cine into raw files, a test subject only ED and ES, harmonized in memory
SECONDS_PER_TRAINING_SUBJECT = 2
SECONDS_PER_TEST_SUBJECT = 0.3
# CPU-seconds per subject of `python -m data_prep population` (every frame rendered and
# harmonized: 43 CPU-s for 10 subjects on one core, start-up included; docs/PHANTOM_FM.md)
SECONDS_PER_POPULATION_SUBJECT = 4


def _register_phantoms(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("phantoms", help="write a synthetic multi-vendor cohort in the raw "
                            "ACDC / M&Ms / M&Ms-2 layouts")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the real datasets' subject counts (default 1.0: about "
                        "880 training subjects; 0.1: 88). A training subject costs about "
                        f"{SECONDS_PER_TRAINING_SUBJECT} CPU-seconds (full cine, raw files)")
    parser.add_argument("--seed", type=int, default=0)
    _add_shift_options(parser)
    parser.add_argument("--generator", choices=("v2", "v1"), default="v2",
                        help="v2 (default): centres and shifts; v1: the original generator that "
                        "past results are pinned to (no shifts, no test cohorts)")
    parser.add_argument("--test-per-vendor", type=int, default=None,
                        help="v2: balanced (50/50) harmonized test subjects per vendor, written "
                        "to DIR/test_harmonized (0: none; default: 250 x --scale, at least 10, "
                        "so --scale 0.1 adds 4 x 25 plus 25 unseen = 125 subjects). A test "
                        f"subject costs about {SECONDS_PER_TEST_SUBJECT} CPU-seconds (ED and ES "
                        "only, harmonized in memory)")
    parser.add_argument("--unseen-test", type=int, default=None,
                        help="v2: test subjects from the unseen centre (default: as many as "
                        "--test-per-vendor)")
    parser.add_argument("--val-per-vendor", type=int, default=0,
                        help="v2: balanced validation subjects per vendor in DIR/val_harmonized "
                        "(default 0; costs as test subjects do)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all cores)")
    parser.set_defaults(func=_run_phantoms)


def _add_shift_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shift", default=None, metavar="acq=A,mix=M,label=L,nuis=N,app=P",
                        help="shift strengths (0-1 realistic; 1-3 outside the literature, "
                        "positive controls only) or a cell name: negative, realistic, positive "
                        "(docs/PHANTOMS.md); omitted families keep the config's defaults "
                        "(all 1)")
    parser.add_argument("--shift-config", type=Path, default=None,
                        help="shift ranges and default strengths (default: the packaged "
                        "data_prep/phantoms/shifts.toml)")


def _register_headroom(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("headroom", help="oracle headroom of per-vendor over pooled models "
                            "from the v2 generator's latent parameters (seconds, no rendering)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    _add_shift_options(parser)
    parser.add_argument("--n-train", type=int, default=4000,
                        help="training draws per vendor for each oracle (default 4000)")
    parser.add_argument("--n-test", type=int, default=2000,
                        help="balanced test draws per vendor (default 2000)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder to write headroom.json into (default: print only); with "
                        "--images: cohorts, features and the merged headroom.json go to "
                        "DIR/image_headroom/<cell>/seed<N>/")
    images = parser.add_argument_group("image-level headroom (renders subjects; needs --out)")
    images.add_argument("--images", action="store_true",
                        help="also probe images: per-vendor against pooled logistic probes on "
                        "rendered, harmonized subjects (docs/PHANTOMS.md)")
    images.add_argument("--train-per-vendor", type=int, default=1000,
                        help="training subjects per vendor at natural prevalence (default 1000)")
    images.add_argument("--test-per-vendor", type=int, default=250,
                        help="balanced test subjects per vendor (default 250)")
    images.add_argument("--features", type=_feature_list, default=("pixels", "fm"),
                        help="feature sets, comma-separated (default pixels,fm)")
    images.add_argument("--weights", type=Path, default=None,
                        help="one-frame FM weights for the fm features (default: the committed "
                        "phantom FM)")
    images.add_argument("--workers", type=int, default=None,
                        help="rendering worker processes (default: all cores)")
    images.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run_headroom)


def _feature_list(text: str) -> tuple[str, ...]:
    names = tuple(item.strip() for item in text.split(",") if item.strip())
    unknown = [n for n in names if n not in ("pixels", "fm")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from pixels,fm, got {text!r}")
    return names


def _register_harmonize(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("harmonize", help="resample, crop and normalise ED/ES volumes into "
                            "one vendor-split cohort (metadata.csv + NIfTI volumes)")
    parser.add_argument("--acdc", type=Path, help="ACDC root (the download's database/ folder)")
    parser.add_argument("--mnms", type=Path, help="M&Ms root (the OpenDataset/ folder)")
    parser.add_argument("--mnms2", type=Path, help="M&Ms-2 root (holds dataset_information.csv)")
    parser.add_argument("--out", type=Path, required=True, help="harmonized output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the federated split")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all cores)")
    parser.set_defaults(func=_run_harmonize)


def _register_population(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("population", help="write an unlabelled v2 pretraining population: "
                            "every cine frame as model input, from every v2 centre")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to write into (a rerun resumes, skipping finished shards)")
    parser.add_argument("--subjects", type=int, required=True, metavar="N",
                        help="subjects in all, shared over the centres by size; each costs "
                        f"about {SECONDS_PER_POPULATION_SUBJECT} CPU-seconds")
    parser.add_argument("--seed", type=int, default=0, help="population seed (its centre sets "
                        "never coincide with a cohort's; docs/PHANTOM_FM.md)")
    parser.add_argument("--centre-sets", type=int, default=20, metavar="K",
                        help="independent draws of all v2 centres, seen and unseen (default 20)")
    parser.add_argument("--size", default="tutorial",
                        help="model preset whose input the frames are (image_size, crop_size; "
                        "default tutorial)")
    parser.add_argument("--shard-subjects", type=int, default=64, metavar="N",
                        help="subjects per shard file (default 64)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all cores)")
    parser.set_defaults(func=_run_population)


# Bounds of the numeric options: generous, finite, and low enough that a typo (a scale of
# 100, a million workers) is refused instead of filling the disk or the process table.
MAX_SCALE = 10.0  # 10x the real datasets: about 8,800 training subjects
MAX_COUNT = 100_000  # subjects per vendor, or draws
MAX_WORKERS = 1_024


def check_out_folder(out: Path, inputs: Sequence[Path | None] = ()) -> None:
    """``--out`` must be a folder (or not exist yet), and not one of the input roots (the
    cohort's own files would be mixed into the dataset's)."""
    from duallora.errors import KitError

    if out.exists() and not out.is_dir():
        raise KitError(f"--out {out}: exists and is not a folder")
    target = out.expanduser().resolve()
    for root in inputs:
        if root is None:
            continue
        source = root.expanduser().resolve()
        if target == source:
            raise KitError(f"--out {out}: is the input {root} itself; write elsewhere")


def check_options(args: argparse.Namespace) -> None:
    """Every numeric option of every data_prep command against its range (one line, exit 2)."""
    from duallora.base.ranges import SEED, between

    SEED.check("--seed", args.seed)
    ranges = {"scale": between(0, MAX_SCALE, open_lo=True),
              "test_per_vendor": between(0, MAX_COUNT), "unseen_test": between(0, MAX_COUNT),
              "val_per_vendor": between(0, MAX_COUNT), "workers": between(1, MAX_WORKERS),
              "n_train": between(1, MAX_COUNT), "n_test": between(1, MAX_COUNT),
              "train_per_vendor": between(1, MAX_COUNT),
              "subjects": between(1, MAX_COUNT), "centre_sets": between(1, 1000),
              "shard_subjects": between(1, MAX_COUNT)}
    for name, valid in ranges.items():
        value = getattr(args, name, None)
        if value is not None:
            valid.check(f"--{name.replace('_', '-')}", value)
    if getattr(args, "out", None) is not None:
        check_out_folder(args.out, [getattr(args, key, None)
                                    for key in ("acdc", "mnms", "mnms2")])


def _shifts(args: argparse.Namespace):  # -> Shifts (imported lazily: keeps --help fast)
    from data_prep.phantoms.shifts import load_config, parse_shifts

    return parse_shifts(args.shift, load_config(args.shift_config))


def _run_phantoms(args: argparse.Namespace) -> int:
    from data_prep.phantoms import default_test_per_vendor, write_phantom_cohort
    from duallora.errors import KitError

    check_options(args)
    if args.generator == "v1":
        if args.shift is not None or args.shift_config is not None:
            raise KitError("--shift and --shift-config need the v2 generator")
        write_phantom_cohort(args.out, scale=args.scale, seed=args.seed, workers=args.workers,
                             generator="v1")
        return 0
    test_per_vendor = (default_test_per_vendor(args.scale) if args.test_per_vendor is None
                       else args.test_per_vendor)
    write_phantom_cohort(args.out, scale=args.scale, seed=args.seed, workers=args.workers,
                         shifts=_shifts(args), test_per_vendor=test_per_vendor,
                         unseen_test=args.unseen_test, val_per_vendor=args.val_per_vendor)
    print(f"phantom cohort (v2) in {args.out}; oracle headroom in {args.out / 'headroom.json'}")
    return 0


def _run_headroom(args: argparse.Namespace) -> int:
    from data_prep.phantoms.headroom import format_report, headroom_report, write_headroom

    check_options(args)
    shifts = _shifts(args)
    report = headroom_report(shifts, args.seed, n_train=args.n_train, n_test=args.n_test)
    print(format_report(report))
    if args.images:
        return _run_image_headroom(args, shifts, report)
    if args.out is not None:
        print(f"written to {write_headroom(report, args.out)}")
    return 0


def _image_headroom_command(args: argparse.Namespace, shifts) -> str:
    """The command line that reproduces an image-level report (recorded in it)."""
    command = (f"python -m data_prep headroom --images --seed {args.seed} --shift "
               f"{shifts.spec()} --n-train {args.n_train} --n-test {args.n_test} "
               f"--train-per-vendor {args.train_per_vendor} --test-per-vendor "
               f"{args.test_per_vendor} --features {','.join(args.features)}")
    if args.shift_config is not None:
        command += f" --shift-config {args.shift_config}"
    if args.weights is not None:
        command += f" --weights {args.weights}"
    return command + f" --out {args.out}"


def _run_image_headroom(args: argparse.Namespace, shifts, oracle: dict) -> int:
    from data_prep.phantoms.image_headroom import (
        build_cohorts,
        format_image_level,
        seed_dir,
        write_image_headroom,
    )
    from duallora.errors import KitError
    from duallora.model.vendor_headroom import cohort_headroom

    if args.out is None:
        raise KitError("--images needs --out (the rendered cohorts are written there)")
    if args.test_per_vendor < 2:
        raise KitError("--test-per-vendor must be at least 2 with --images (both labels)")
    if args.weights is not None and not args.weights.is_file():
        raise KitError(f"--weights {args.weights}: no such file")
    progress = not args.no_progress
    train, test = build_cohorts(args.out, shifts, args.seed, args.train_per_vendor,
                                args.test_per_vendor, workers=args.workers, progress=progress)
    folder = seed_dir(args.out, shifts, args.seed)
    image_level = {
        "features": cohort_headroom(train, test, list(args.features), weights=args.weights,
                                    cache_dir=folder / "features", progress=progress),
        "n_train_per_vendor": args.train_per_vendor,
        "n_test_per_vendor": args.test_per_vendor,
        "command": _image_headroom_command(args, shifts),
    }
    print(format_image_level(image_level))
    print(f"written to {write_image_headroom(oracle, image_level, folder)}")
    return 0


def _run_harmonize(args: argparse.Namespace) -> int:
    from data_prep.harmonize import harmonize_datasets

    check_options(args)
    harmonize_datasets(acdc=args.acdc, mnms=args.mnms, mnms2=args.mnms2, out=args.out,
                       seed=args.seed, workers=args.workers)
    return 0


def _run_population(args: argparse.Namespace) -> int:
    from data_prep.phantoms.population_v2 import population_draws, write_population_frames
    from duallora.base.presets import PRESETS
    from duallora.errors import KitError

    check_options(args)
    if args.size not in PRESETS:
        raise KitError(f"unknown --size {args.size!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[args.size]
    subjects = population_draws(args.subjects, args.seed, args.centre_sets)
    info = write_population_frames(args.out, subjects, args.workers,
                                   image_size=preset.image_size, crop_size=preset.crop_size,
                                   shard_subjects=args.shard_subjects, seed=args.seed,
                                   n_centre_sets=args.centre_sets)
    sizes = info["sizes"]
    print(f"population (v2, unlabelled): {sizes['subjects']} subjects, {sizes['frames']} frames "
          f"({sizes['skipped']} skipped) in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m data_prep", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    _register_phantoms(sub)
    _register_headroom(sub)
    _register_harmonize(sub)
    _register_population(sub)
    return run_cli(parser, argv)
