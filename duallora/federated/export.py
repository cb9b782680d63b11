"""Write the selected final models so they can be reused outside this kit.

    final/global.safetensors           the selected global payload (shared tensors)
    final/private/<client>.safetensors each client's selected private payload
    final/peft/global/                 the global LoRA adapter in PEFT's folder format
    final/peft/<client>/local/         a client's local adapter (Med-DualLoRA, FedDPA)
    final/finetuned/<client>.safetensors
                                       a client's fine-tuned global adapter and head
                                       (``fedavg_lora_ft``), with its PEFT folder
                                       final/peft/<client>/global/
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

from safetensors.torch import save_file

from duallora.federated.adapters import save_adapters
from duallora.federated.client import split_private
from duallora.federated.client_model import ClientModel
from duallora.federated.serialization import Payload
from duallora.federated.state import RunState


def export_final_models(folder: Path, model: ClientModel, state: RunState,
                        include_sites: bool = True,
                        finetuned: dict[str, Payload] | None = None) -> None:
    """Write the selected models; ``include_sites=False`` writes only what a server holds
    (the global model and the head standardization: over Flower each site exports its own).
    ``finetuned``: each site's fine-tuned model (``fedavg_lora_ft``, in-process only)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    adapters = model.strategy.adapters
    best_global = state.best_global
    if best_global is not None and best_global.received:
        save_file(_contiguous(best_global.received), str(folder / "global.safetensors"))
        if "global" in adapters:
            model.set_state(best_global.received, None)
            save_adapters(model.module, folder / "peft", ["global"])
    for client, best in sorted(state.best.items()) if include_sites else []:
        private = split_private(best.private)[0]  # parameters only, not optimizer state
        if private:
            (folder / "private").mkdir(exist_ok=True)
            save_file(_contiguous(private), str(folder / "private" / f"{client}.safetensors"))
        if model.strategy.private_adapter in adapters:
            model.set_state(best.received, private)
            save_adapters(model.module, folder / "peft" / client, [model.strategy.private_adapter])
    for client, payload in sorted((finetuned or {}).items()) if include_sites else []:
        export_finetuned(folder, model, client, payload)
    for owner, stats in sorted(state.head_norm.items()):
        (folder / "head_norm").mkdir(exist_ok=True)
        save_file(_contiguous(stats), str(folder / "head_norm" / f"{owner}.safetensors"))
    model.set_state(None, None)


def export_finetuned(folder: Path, model: ClientModel, client: str, payload: Payload) -> None:
    """A site's fine-tuned payload as ``finetuned/<client>.safetensors`` and its fine-tuned
    global adapter as ``peft/<client>/global/`` (``folder``: a ``final`` folder)."""
    (folder / "finetuned").mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(payload), str(folder / "finetuned" / f"{client}.safetensors"))
    if "global" in model.strategy.adapters:
        model.set_state(payload, None)
        save_adapters(model.module, folder / "peft" / client, ["global"])
    model.set_state(None, None)


def _contiguous(payload: dict) -> dict:
    return {name: tensor.contiguous() for name, tensor in payload.items()}
