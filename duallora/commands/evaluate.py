"""``duallora evaluate``: score a model per vendor, with the kit's metrics and CIs, no training.

    duallora evaluate --model RUN_DIR [--data HARMONIZED] [--out DIR] [--device ...]
    duallora evaluate --model RUN_DIR/checkpoints/final --data HARMONIZED
    duallora evaluate --model CLASSIFIER.safetensors --data HARMONIZED [--model-size base]

A kit run (its folder, ``checkpoints/final`` or ``checkpoints/last.pt``): each vendor's
personalized model (split ``test``) and the global model (``test_global``, ``holdout``), rebuilt
from the run's config.json; on the run's own cohort, device and precision this reproduces the
run's final predictions exactly. A ``.safetensors`` file: a fine-tuned 2-class ConvViT
classifier (e.g. CineMA's), loaded strictly, scored on every vendor's test split: a reference
row beside the federated strategies.

Writes DIR/predictions.csv and DIR/metrics.csv (a run directory's format) and
DIR/evaluation.json. DIR defaults to RUN_DIR/evaluation (a run) or CLASSIFIER_evaluation/.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="score a run's exported models or a fine-tuned "
                            "classifier per vendor (no training)", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, metavar="PATH",
                        help="a run directory, its checkpoints/final or last.pt, or a "
                        "classifier .safetensors")
    parser.add_argument("--data", type=Path, default=None,
                        help="harmonized cohort (default: the run's --data)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]",
                        help="where to compute (default: the run's setting; a classifier: auto)")
    parser.add_argument("--precision", default=None, metavar="fp32|bf16|fp16",
                        help="autocast precision (default: the run's; a classifier: fp32)")
    parser.add_argument("--fm", default=None, help="the run's foundation weights file, when it "
                        "moved (default: the run's --fm)")
    parser.add_argument("--cache-dir", default=None, help="prefix cache folder (default: the "
                        "run's, or <data dir>/prefix_cache)")
    parser.add_argument("--bootstrap", type=int, default=None,
                        help="bootstrap replicates of the CIs (default: the run's; a "
                        "classifier: 1000)")
    parser.add_argument("--model-size", default="", help="preset of a classifier file without "
                        "a size in its header (CineMA's: base)")
    parser.set_defaults(func=run)


def check_model_path(model: Path) -> None:
    """Refuse, in one line, a ``--model`` that cannot be one of the accepted kinds, before
    anything is loaded or written (a stray file used to end in an ``IndexError``)."""
    from duallora.errors import KitError

    if not model.exists():
        raise KitError(f"--model {model}: no such file or folder")
    if model.is_dir():
        return
    kinds = "a run directory, its checkpoints/final, its checkpoints/last.pt or a classifier " \
        ".safetensors"
    if model.suffix == ".pt":
        if model.resolve().parent.name != "checkpoints":
            raise KitError(f"--model {model}: a .pt file must be a run's checkpoints/last.pt "
                           f"(expected {kinds})")
        return
    if model.suffix != ".safetensors":
        raise KitError(f"--model {model}: not a model (expected {kinds})")
    from safetensors import safe_open

    try:
        with safe_open(str(model), framework="pt", device="cpu") as handle:
            handle.metadata()
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise KitError(f"--model {model}: not a readable .safetensors file "
                       f"({type(err).__name__}: {err})") from err


def check_options(args: argparse.Namespace) -> None:
    """The same ranges as training's options (``TrainConfig``'s declarations)."""
    from duallora.base.config import TrainConfig, check_device_spec, check_precision
    from duallora.base.ranges import check_type
    from duallora.errors import KitError

    if args.device is not None:
        check_device_spec(args.device)
    if args.precision is not None:
        check_precision(args.precision)
    fields = TrainConfig.__dataclass_fields__
    if args.bootstrap is not None:
        check_type("--bootstrap", args.bootstrap, 0)
        fields["bootstrap"].metadata["valid"].check("--bootstrap", args.bootstrap)
    if args.model_size:
        fields["model_size"].metadata["valid"].check("--model-size", args.model_size)
    for name, value in (("--fm", args.fm), ("--cache-dir", args.cache_dir)):
        if value is not None and not value.strip():
            raise KitError(f"{name} must not be empty")


def default_out(model: Path) -> Path:
    """Where results go without ``--out``: inside the run, or beside the classifier file."""
    if model.is_file() and model.suffix == ".safetensors":
        return model.with_name(model.stem + "_evaluation")
    model = model.resolve()  # a relative name has no parents[1] to go to
    if len(model.parents) < 2:
        return model / "evaluation" if model.is_dir() else model.with_name("evaluation")
    if model.is_file():  # RUN_DIR/checkpoints/last.pt
        return model.parents[1] / "evaluation"
    run = model if (model / "checkpoints").is_dir() else model.parents[1]
    return run / "evaluation"


def run(args: argparse.Namespace) -> int:
    from duallora.errors import KitError

    check_options(args)
    check_model_path(args.model)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise KitError(f"--out {args.out}: exists and is not a folder")
    data = args.data
    if data is None:
        if args.model.is_file() and args.model.suffix == ".safetensors":
            raise KitError("--data is required to score a classifier file")
        from duallora.federated.evaluate import read_export

        data = Path(read_export(args.model).config.data)
    from duallora.federated.evaluate import evaluate_model

    out = evaluate_model(args.model, data, args.out or default_out(args.model),
                         device=args.device, precision=args.precision, fm=args.fm,
                         cache_dir=args.cache_dir, bootstrap=args.bootstrap,
                         model_size=args.model_size)
    print(f"evaluated {args.model} on {data}: {out / 'predictions.csv'}, {out / 'metrics.csv'}")
    return 0
