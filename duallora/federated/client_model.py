"""The model one client trains: frozen foundation model + the strategy's adapters and heads.

``ClientModel`` knows, for every parameter, which strategy group it belongs to, so it can hand
out exactly the tensors a client uploads (``shared_payload``) or keeps (``private_payload``), and
load what it receives (usually what it uploads, averaged; FedALT's rest-of-world adapter is
received but never trained). Every client (and the server, for evaluation) builds it the same
way from the same seed, so all start from identical weights, as if the server had sent the init.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from duallora.base.config import TrainConfig
from duallora.base.device import autocast, configure_determinism, resolve_device, to_host
from duallora.base.presets import FRAME_MODES
from duallora.errors import KitError
from duallora.federated.adapters import (
    AdapterSpec,
    attach_adapters,
    core_model,
    resolve_blocks,
    set_active_adapters,
)
from duallora.federated.fedalt import attach_routers
from duallora.federated.serialization import Payload
from duallora.federated.strategies import (
    FROZEN,
    ROUTER_MIX,
    Strategy,
    get_strategy,
    parameter_group,
)


def load_foundation(config: TrainConfig) -> nn.Module:
    """The frozen backbone: committed phantom FM, random init (``none``) or a weights file.

    A file may hold CineMA's MAE pretraining checkpoint or a fine-tuned classifier
    (``duallora.model.load_foundation_model`` tells them apart). Heads not in the file are
    initialised from ``config.seed``. ``config.frames`` picks how ED and ES enter the model
    (``duallora.model.frames``).
    """
    from duallora import model as model_lib

    if config.frames not in FRAME_MODES:
        raise KitError(f"--frames must be one of {', '.join(FRAME_MODES)}, not "
                       f"{config.frames!r}")
    if config.fm == "phantom":
        if config.model_overrides:
            raise KitError("--model-overrides needs --fm none (the phantom FM has fixed shapes)")
        return model_lib.load_phantom_fm(config.model_size, seed=config.seed,
                                         frames=config.frames)
    if config.fm != "none":
        path = Path(config.fm)
        if not path.is_file():
            raise KitError(f"--fm {config.fm}: no such weights file")
        return model_lib.load_foundation_model(path, size=config.model_size, seed=config.seed,
                                               frames=config.frames)
    overrides = dict(config.model_overrides)
    image_size = overrides.pop("image_size", None)
    if "conv_chans" in overrides:
        overrides["conv_chans"] = tuple(overrides["conv_chans"])
    return model_lib.build_convvit(config.model_size, image_size=image_size, seed=config.seed,
                                   frames=config.frames, **overrides)


def model_input_size(config: TrainConfig) -> tuple[tuple[int, int, int], int]:
    """``(image_size, crop_size)`` that ``duallora.data`` should feed this model preset."""
    from duallora.model import PRESETS

    if config.model_size not in PRESETS:
        raise KitError(f"unknown model size {config.model_size!r}; choose one of "
                       f"{', '.join(PRESETS)}")
    preset = PRESETS[config.model_size]
    image_size = config.model_overrides.get("image_size", preset.image_size)
    crop_size = config.model_overrides.get("crop_size", preset.crop_size)
    return tuple(int(v) for v in image_size), int(crop_size)  # type: ignore[return-value]


class ClientModel:
    """A strategy's trainable view of the model, with payload get/set by parameter name.

    The module lives on ``device`` and runs under ``precision`` autocast; payloads always come
    out as float32 host tensors (what travels and is checkpointed does not depend on either).
    """

    def __init__(self, module: nn.Module, strategy: Strategy, blocks: Sequence[int],
                 device: torch.device | None = None, precision: str = "fp32"):
        self.module = module
        self.device = device or torch.device("cpu")
        self.precision = precision
        self.core = core_model(module)
        self.strategy = strategy
        self.blocks = list(blocks)
        head_names = list(self.core.head_parameter_names())
        stem_names = list(getattr(self.core, "stem_parameter_names", list)())
        self.groups = {name: parameter_group(name, self.blocks, head_names, stem_names)
                       for name, _ in module.named_parameters()}
        self.params = dict(module.named_parameters())
        self.trainable_names = sorted(n for n, g in self.groups.items() if g in strategy.trainable)
        self.shared_names = sorted(n for n, g in self.groups.items() if g in strategy.shared)
        self.private_names = sorted(n for n, g in self.groups.items() if g in strategy.private)
        self.kept_names = sorted(n for n, g in self.groups.items() if g in strategy.kept)
        self.received_names = sorted(n for n, g in self.groups.items()
                                     if g in strategy.received_groups)
        if not self.trainable_names:
            raise KitError(f"strategy {strategy.name} trains nothing with --blocks {blocks}")
        self.use_adapters(strategy.adapters)
        # the start of every set_state: what trains, and what is received without training
        self.loadable = sorted(set(self.trainable_names) | set(self.received_names))
        self.initial = self.payload(self.loadable)

    # -- which parameters train -------------------------------------------------------------
    def use_adapters(self, names: Sequence[str]) -> None:
        """Activate adapters ``names`` and (re)mark exactly the strategy's groups trainable."""
        if self.strategy.adapters:
            set_active_adapters(self.module, list(names))
        for name, param in self.params.items():
            param.requires_grad_(self.groups[name] in self.strategy.trainable)

    def train_only(self, groups: frozenset[str]) -> list[str]:
        """Leave only the strategy's trainable parameters of ``groups`` trainable (one phase of
        a phased schedule, e.g. FedDPA's); returns their names. ``use_adapters`` undoes it."""
        names = [n for n in self.trainable_names if self.groups[n] in groups]
        for name, param in self.params.items():
            param.requires_grad_(name in names)
        return names

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.params[name] for name in self.trainable_names]

    def count(self, names: Sequence[str]) -> int:
        return int(sum(self.params[name].numel() for name in names))

    # -- payloads ---------------------------------------------------------------------------
    def payload(self, names: Sequence[str]) -> Payload:
        return {name: to_host(self.params[name]) for name in names}

    def shared_payload(self) -> Payload:
        """What this client uploads (and what the server broadcasts back after averaging)."""
        return self.payload(self.shared_names)

    def private_payload(self) -> Payload:
        """What the client carries to its next round: the private groups (which never leave
        it) and, under FedALT, its individual adapter (uploaded, but never sent back)."""
        return self.payload(self.kept_names)

    def load(self, payload: Payload) -> None:
        """Copy received tensors into the model; only trainable or received parameter names
        are accepted."""
        unknown = sorted(set(payload) - set(self.loadable))
        if unknown:
            raise ValueError(f"payload holds parameters this strategy does not train: "
                             f"{unknown[:3]}")
        with torch.no_grad():
            for name, tensor in payload.items():
                self.params[name].copy_(tensor)

    def set_state(self, received: Payload | None, private: Payload | None) -> None:
        """Start from the shared init, then this client's private part, then the global part."""
        self.load(self.initial)
        if private:
            self.load(private)
        if received:
            self.load(received)

    # -- forward ----------------------------------------------------------------------------
    def autocast(self) -> AbstractContextManager[Any]:
        """The run's autocast (none at fp32) around a forward pass."""
        return autocast(self.device, self.precision)

    def forward(self, inputs: dict[str, torch.Tensor], from_block: int | None) -> torch.Tensor:
        """Logits from images (``from_block=None``) or from cached prefix states."""
        if from_block is None:
            return self.core(inputs["x"])
        return self.core.forward_suffix(inputs, from_block)

    def frozen_prefix_end(self) -> int:
        """First block whose weights train: every block before it is frozen and cacheable."""
        return min(self.blocks) if self.blocks else 0


def build_client_model(config: TrainConfig, strategy: Strategy | None = None) -> ClientModel:
    """Build the foundation model and attach the strategy's adapters (same result every call),
    then move it to ``config.device``: every weight is initialised on the CPU first, so the
    starting point is the same on every device."""
    strategy = strategy or get_strategy(config.strategy, config.head)
    network = load_foundation(config)
    network.eval()  # the backbone is frozen: no dropout / norm statistics updates in it
    blocks = resolve_blocks(config.blocks, int(network.n_blocks))
    if getattr(network, "per_frame", False):
        network.set_fusion_block(min(blocks))  # the frozen prefix stays one frame at a time
    torch.manual_seed(config.seed + 1)  # adapter init, identical on every client
    specs = [_adapter_spec(name, config, strategy) for name in strategy.adapters]
    module = (attach_adapters(network, specs, blocks, config.targets, config.lora_dropout)
              if specs else network)
    if strategy.mixing == ROUTER_MIX:
        attach_routers(module)  # zero-initialized: no random draw
    device = resolve_device(config.device)
    configure_determinism(device, config.precision)
    module.to(device)  # in place: the Parameter objects (and their names) stay the same
    client_model = ClientModel(module, strategy, blocks, device, config.precision)
    if not any(group != FROZEN for group in client_model.groups.values()):
        raise KitError("no parameter would be trained; check --blocks and the LoRA targets")
    return client_model


def _adapter_spec(name: str, config: TrainConfig, strategy: Strategy) -> AdapterSpec:
    """Med-DualLoRA's local adapter has its own rank/alpha; every other adapter uses --rank."""
    if strategy.private_rank and name == strategy.private_adapter:
        return AdapterSpec(name, config.local_rank, config.local_alpha)
    return AdapterSpec(name, config.rank, config.alpha)
