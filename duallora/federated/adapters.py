"""LoRA adapters on the ConvViT with Hugging Face PEFT.

Med-DualLoRA attaches two named LoRA adapters, ``global`` and ``local``, to the same linear layers
of the chosen transformer blocks and keeps both active, so a layer computes
``W0 x + s_g B_g A_g x + s_l B_l A_l x`` with ``s = alpha / rank``. The baselines use one adapter
(or none). Adapters are saved and loaded in PEFT's own folder format so they can be reused with
``peft.PeftModel.from_pretrained`` elsewhere, and can be merged into the weights for inference.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from duallora.errors import KitError


@dataclass(frozen=True)
class AdapterSpec:
    """One named LoRA adapter: its rank and alpha (scale ``alpha / rank``)."""

    name: str
    rank: int
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def resolve_blocks(spec: str, n_blocks: int) -> list[int]:
    """``last2`` (the paper's default), ``lastK``, ``all``, or comma-separated block indices."""
    text = spec.strip().lower()
    if text == "all":
        return list(range(n_blocks))
    if text.startswith("last") and text[4:].isdigit():
        count = int(text[4:])
        if not 1 <= count <= n_blocks:
            raise KitError(f"--blocks {spec}: the model has {n_blocks} blocks")
        return list(range(n_blocks - count, n_blocks))
    try:
        blocks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise KitError(f"--blocks {spec!r}: use last2, all, or indices like 4,5") from None
    if not blocks or blocks[0] < 0 or blocks[-1] >= n_blocks:
        raise KitError(f"--blocks {spec!r}: indices must lie in 0..{n_blocks - 1}")
    return blocks


def target_module_names(blocks: Sequence[int], targets: Sequence[str]) -> list[str]:
    """Full module names (``encoder.blocks.{i}.attn.q`` ...) that receive LoRA."""
    return [f"encoder.blocks.{block}.{target}" for block in blocks for target in targets]


def attach_adapters(model: nn.Module, adapters: Sequence[AdapterSpec], blocks: Sequence[int],
                    targets: Sequence[str], dropout: float = 0.0) -> PeftModel:
    """Wrap ``model`` in PEFT with every adapter in ``adapters`` attached and active.

    PEFT freezes every base weight and, after ``set_adapter([...])``, marks the LoRA weights of
    all listed adapters trainable. Adapter weights are initialised from torch's global RNG (A:
    Kaiming-uniform, B: zeros), so seed before calling to get the same init on every client.
    """
    if not adapters:
        raise ValueError("attach_adapters needs at least one adapter")
    modules = target_module_names(blocks, targets)
    first, *rest = adapters
    peft_model = get_peft_model(model, _lora_config(first, modules, dropout),
                                adapter_name=first.name)
    for spec in rest:
        peft_model.add_adapter(spec.name, _lora_config(spec, modules, dropout))
    set_active_adapters(peft_model, [spec.name for spec in adapters])
    return peft_model


def _lora_config(spec: AdapterSpec, modules: list[str], dropout: float) -> LoraConfig:
    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=dropout,
                      target_modules=modules, bias="none")


def set_active_adapters(peft_model: PeftModel, names: Sequence[str]) -> None:
    """Activate exactly ``names`` (several at once: their updates add up).

    ``PeftModel.set_adapter`` accepts one name only; the tuner underneath accepts a list. It also
    resets ``requires_grad`` (active adapters trainable, others frozen), so the caller re-applies
    its own trainable set afterwards.
    """
    peft_model.base_model.set_adapter(list(names))


def core_model(module: nn.Module) -> nn.Module:
    """The ConvViT inside a PEFT wrapper (LoRA layers injected in place), or ``module`` itself."""
    if isinstance(module, PeftModel):
        return module.base_model.model
    return module


def save_adapters(peft_model: PeftModel, folder: Path, names: Sequence[str]) -> list[Path]:
    """Write each adapter as a PEFT folder ``folder/<name>/`` (adapter_config.json + weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        peft_model.save_pretrained(str(folder), selected_adapters=[name])
        written.append(folder / name)
    return written


def load_adapters(base: nn.Module, folder: Path, names: Sequence[str]) -> PeftModel:
    """Load PEFT adapter folders ``folder/<name>/`` onto ``base`` and activate them together."""
    folder = Path(folder)
    missing = [name for name in names if not (folder / name / "adapter_config.json").is_file()]
    if missing:
        raise KitError(f"{folder}: no PEFT adapter folder for {', '.join(missing)}")
    first, *rest = names
    peft_model = PeftModel.from_pretrained(base, str(folder / first), adapter_name=first)
    for name in rest:
        peft_model.load_adapter(str(folder / name), adapter_name=name)
    set_active_adapters(peft_model, list(names))
    return peft_model


def merged_model(peft_model: PeftModel, names: Sequence[str]) -> nn.Module:
    """A plain ConvViT with the named adapters folded into its weights (the original is kept)."""
    clone = copy.deepcopy(peft_model)
    set_active_adapters(clone, list(names))
    return clone.merge_and_unload(adapter_names=list(names))
