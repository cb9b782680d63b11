"""Foundation models ready to fine-tune: the committed phantom FM, CineMA's, or any weights file.

The kit's phantom FM is stored like CineMA's published checkpoint (MAE encoder, one input
frame, ``enc_down_dict.sax.* / enc_fusion_dict.sax.* / encoder.*``) plus a safetensors header
naming its preset, so it goes through exactly the same :func:`load_cinema_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

from duallora import paths
from duallora.base.presets import PER_FRAME, REPEAT, check_frames
from duallora.errors import KitError
from duallora.model.checkpoints import (
    FIRST_CONV_KEY,
    load_cinema_pretrained,
    load_finetuned,
    read_metadata,
    read_state_dict,
)
from duallora.model.convvit import ConvViT, build_convvit
from duallora.model.frames import FUSION_PREFIX
from duallora.model.hub import PRETRAINED_FILE, cinema_file

WEIGHTS_DIR = paths.PACKAGE_DIR / "weights"
MAE_ENCODER_FORMAT = "cinema-mae-encoder"


def phantom_fm_path(size: str = "tutorial") -> Path:
    return WEIGHTS_DIR / f"phantom_fm_{size}.safetensors"


def phantom_fm_info(size: str = "tutorial") -> dict:
    """The JSON record of how the committed phantom FM was made (command, seed, loss, ...)."""
    record = phantom_fm_path(size).with_suffix(".json")
    if not record.is_file():
        raise KitError(f"no metadata record {record.name} for the {size!r} phantom FM")
    return json.loads(record.read_text())


def load_foundation_model(path: str | Path, *, size: str | None = None, n_classes: int = 2,
                          seed: int = 0, frame_init: str = "repeat",
                          n_frames: int = 2, frames: str = REPEAT) -> ConvViT:
    """A ConvViT initialised from ``path``, whatever its kind.

    - MAE-encoder weights (CineMA's ``cinema.safetensors`` or the kit's phantom FM): encoder
      loaded, heads freshly initialised (``seed``) with ``n_classes`` outputs;
    - a full ConvViT checkpoint (fine-tuned): loaded strictly (its head decides ``n_classes``).

    ``size`` defaults to the preset recorded in the file's header (kit files) and must be given
    for upstream files (``base`` for CineMA's). ``n_frames`` (MAE weights only): 2 for the ED+ES
    classifier, 1 for the MAE's own one-frame input (the per-frame linear probe).

    ``frames`` (see ``duallora.model.frames``): under ``repeat`` and ``trainable-stem`` the
    MAE's one-frame first conv is repeated for ED and ES (``frame_init``); under ``per-frame``
    it loads as is and the frame fusion starts at its seeded init. A fine-tuned two-frame
    classifier (CineMA's) loads under ``repeat`` only, which reproduces its logits exactly.
    """
    check_frames(frames)
    path = Path(path)
    header = read_metadata(path)
    size = size or header.get("size")
    if size is None:
        raise KitError(f"{path}: no model size recorded in the file; pass size= "
                       f"(CineMA's published weights are 'base')")
    state = read_state_dict(path)
    if FIRST_CONV_KEY not in state:
        raise KitError(f"{path} holds no ConvViT sax encoder ({FIRST_CONV_KEY} missing)")
    is_classifier = any(k.startswith("pred_head_dict.cls.") for k in state)
    if is_classifier:
        n_out = int(state["pred_head_dict.cls.weight"].shape[0])
        has_fusion = any(k.startswith(FUSION_PREFIX) for k in state)
        if frames != (PER_FRAME if has_fusion else REPEAT):
            kind = ("a per-frame kit classifier" if has_fusion
                    else "a fine-tuned classifier with a two-frame first conv (CineMA's input)")
            raise KitError(f"{path} is {kind}; it loads with frames="
                           f"{PER_FRAME if has_fusion else REPEAT!r} only, not {frames!r}")
        if not has_fusion:
            n_frames = int(state[FIRST_CONV_KEY].shape[1])
        model = build_convvit(size, n_frames=n_frames, n_classes=n_out, seed=seed,
                              frames=frames)
        load_finetuned(model, state)
        return model
    model = build_convvit(size, n_frames=n_frames, n_classes=n_classes, seed=seed,
                          frames=frames)
    load_cinema_pretrained(model, state, frame_init=frame_init)
    return model


def load_phantom_fm(size: str = "tutorial", *, n_classes: int = 2, seed: int = 0,
                    frame_init: str = "repeat", n_frames: int = 2,
                    frames: str = REPEAT) -> ConvViT:
    """The kit's MAE-pretrained phantom foundation model (committed in ``duallora/weights``);
    ``frames`` as in :func:`load_foundation_model`."""
    path = phantom_fm_path(size)
    if not path.is_file():
        raise KitError(f"no committed phantom foundation model for size {size!r} ({path.name}); "
                       f"create it with `python -m duallora pretrain --size {size}`")
    return load_foundation_model(path, size=size, n_classes=n_classes, seed=seed,
                                 frame_init=frame_init, n_frames=n_frames, frames=frames)


def load_cinema_fm(*, n_classes: int = 2, seed: int = 0, path: str | Path | None = None,
                   frame_init: str = "repeat", frames: str = REPEAT) -> ConvViT:
    """CineMA's published base encoder (downloaded from the hub unless ``path`` is given)."""
    source = Path(path) if path is not None else cinema_file(PRETRAINED_FILE)
    return load_foundation_model(source, size="base", n_classes=n_classes, seed=seed,
                                 frame_init=frame_init, frames=frames)
