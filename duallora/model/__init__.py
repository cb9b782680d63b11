"""The foundation model: CineMA's ConvViT (view ``sax``), presets, checkpoints, phantom FM.

Start with :func:`build_convvit` (random init), :func:`load_phantom_fm` (the kit's committed,
phantom-pretrained encoder) or :func:`load_cinema_fm` (CineMA's published encoder).

- ``presets``      model sizes (CineMA's, ``tutorial`` for CPUs, ``test-tiny`` for the tests;
                   declared on the ground floor, ``duallora.base.presets``).
- ``layers``       ConvViT building blocks with CineMA's parameter names.
- ``backbone``     its parts: conv stem, ViT encoder, skip fusion (shared with the MAE).
- ``convvit``      the ConvViT classifier itself and ``build_convvit``.
- ``checkpoints``  reading and writing weights (CineMA's MAE and fine-tuned files, ours).
- ``hub``          CineMA's weights from the Hugging Face hub.
- ``foundation``   ready-to-fine-tune encoders: the phantom FM, CineMA's, any weights file.
- ``mae``          the masked autoencoder CineMA pretrains with.
- ``pretrain``     MAE pretraining on a harmonized cohort or a frames population
                   (``duallora pretrain``); ``pretrain_checkpoint`` makes it resumable,
                   ``frames_population`` reads its data, ``anatomy_head`` the optional
                   auxiliary objective.
- ``probe``        linear probes of frozen features.
"""

from duallora.base.presets import CINEMA_SIZES, PRESETS, ConvViTConfig, get_preset
from duallora.model.checkpoints import (
    CheckpointError,
    PretrainedLoadReport,
    load_cinema_pretrained,
    load_finetuned,
    read_state_dict,
    save_weights,
)
from duallora.model.convvit import ConvViT, build_convvit
from duallora.model.foundation import (
    load_cinema_fm,
    load_foundation_model,
    load_phantom_fm,
    phantom_fm_info,
    phantom_fm_path,
)
from duallora.model.hub import CINEMA_REPO, PRETRAINED_FILE, cinema_file, finetuned_cvd_file

__all__ = [
    "CINEMA_REPO", "CINEMA_SIZES", "PRESETS", "PRETRAINED_FILE", "CheckpointError", "ConvViT",
    "ConvViTConfig", "PretrainedLoadReport", "build_convvit", "cinema_file", "finetuned_cvd_file",
    "get_preset", "load_cinema_fm", "load_cinema_pretrained", "load_finetuned",
    "load_foundation_model", "load_phantom_fm", "phantom_fm_info", "phantom_fm_path",
    "read_state_dict", "save_weights",
]
