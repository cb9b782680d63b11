"""Getting CineMA's published weights from the Hugging Face hub (repo ``mathpluscode/CineMA``).

A file already present under ``local_dir`` (default ``data/cinema/`` in the repository, with the
hub's own sub-folders) is used without any network access; otherwise it is downloaded with
``huggingface_hub`` into its cache. Offline, the error says exactly what to download and where.
"""

from __future__ import annotations

from pathlib import Path

from duallora import paths
from duallora.errors import KitError

CINEMA_REPO = "mathpluscode/CineMA"
PRETRAINED_FILE = "pretrained/cinema.safetensors"
PRETRAINED_CONFIG = "pretrained/config.yaml"


def finetuned_cvd_file(dataset: str, seed: int = 0, view: str = "sax") -> str:
    """Hub path of CineMA's fine-tuned disease classifier, e.g. ``acdc``, ``mnms``, ``mnms2``."""
    return f"finetuned/classification_cvd/{dataset}_{view}/{dataset}_{view}_{seed}.safetensors"


def default_local_dir() -> Path:
    return paths.default_data_dir() / "cinema"


def cinema_file(filename: str, local_dir: str | Path | None = None) -> Path:
    """Local path of ``filename`` from the CineMA hub repo, downloading it when needed."""
    local_root = Path(local_dir) if local_dir is not None else default_local_dir()
    local = local_root / filename
    if local.is_file():
        return local
    url = f"https://huggingface.co/{CINEMA_REPO}/resolve/main/{filename}"
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=CINEMA_REPO, filename=filename))
    except Exception as err:  # noqa: BLE001 - offline, proxy, missing file: all end the same way
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KitError(f"cannot fetch {filename} from the Hugging Face hub ({reason[:160]}). "
                       f"Download {url} on a machine with internet access and put it at "
                       f"{local}") from err
