"""Write the selected final models so they can be reused outside this kit.

    final/global.safetensors           the selected global payload (shared tensors)
    final/private/<client>.safetensors each client's selected private payload
    final/peft/global/                 the global LoRA adapter in PEFT's folder format
    final/peft/<client>/local/         a client's local adapter (Med-DualLoRA, ``local``)
    final/head_norm/<owner>.safetensors
                                       ``mean``/``std`` in front of the heads (``global``, or
                                       per client for ``local``); see ``head_norm``

Heads are plain tensors inside the payload files (they are not LoRA modules). They read
standardized features: load the head_norm file with ``ConvViT.set_head_standardization`` (or
fold it into the heads with ``fold_head_standardization``) to reproduce the run's predictions.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from duallora.federated.adapters import save_adapters
from duallora.federated.client_model import ClientModel


def export_final_models(folder: Path, model: ClientModel, state: dict[str, Any]) -> None:
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    adapters = model.strategy.adapters
    best_global = state.get("best_global")
    if best_global is not None and best_global["payload"]:
        save_file(_contiguous(best_global["payload"]), str(folder / "global.safetensors"))
        if "global" in adapters:
            model.set_state(best_global["payload"], None)
            save_adapters(model.module, folder / "peft", ["global"])
    for client, best in sorted(state["best"].items()):
        private = best.get("private") or {}
        if private:
            (folder / "private").mkdir(exist_ok=True)
            save_file(_contiguous(private), str(folder / "private" / f"{client}.safetensors"))
        if "local" in adapters:
            model.set_state(best["received"], private)
            save_adapters(model.module, folder / "peft" / client, ["local"])
    for owner, stats in sorted((state.get("head_norm") or {}).items()):
        (folder / "head_norm").mkdir(exist_ok=True)
        save_file(_contiguous(stats), str(folder / "head_norm" / f"{owner}.safetensors"))
    model.set_state(None, None)


def _contiguous(payload: dict) -> dict:
    return {name: tensor.contiguous() for name, tensor in payload.items()}
