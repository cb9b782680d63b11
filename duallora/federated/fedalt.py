"""FedALT's two pieces that no other strategy has: the per-layer router and the server's
leave-one-out "rest-of-world" (RoW) adapter.

Bian et al., "FedALT: Federated Fine-Tuning through Adaptive Local Training with Rest-of-World
LoRA", AAAI 2026 (public code: github.com/jmbian/FedALT, MIT). Each site keeps training its own
*individual* LoRA, never reset to an average; it uploads it every round. The server sends each
site back the plain mean of the *other* sites' individual adapters (leave-one-out), which the
site holds frozen in a second adapter; a small router decides, per token, how much of each
adapter every adapted layer uses: ``W0 x + w_ind(x) s B_ind A_ind x + w_row(x) s B_row A_row x``
with ``(w_ind, w_row) = softmax(R x)``.

Here the individual adapter is the model's ``local`` adapter and the RoW adapter its ``global``
one (same rank and alpha, ``--rank``/``--alpha``), so the kit's parameter groups, payloads and
exports need nothing new. Choices the paper leaves open, fixed before any run:

- the router is one ``Linear(d_in, 2)`` per adapted layer, reading that layer's input token
  (the public code routes per token too), zero-initialized so both adapters start at weight
  1/2 (no random draw, identical on every site);
- the router and the classification head stay on the site (the paper's LLMs have no head;
  the router is not averaged, the public code's default being a per-client router as well);
- the RoW mean is unweighted over the other sites' latest uploads (as the public code), and
  before a site has uploaded anything it counts with the shared initial individual adapter,
  whose zero ``B`` adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from duallora.federated.serialization import Payload
from duallora.federated.strategies import weighted_average

ROUTER_ATTR = "fedalt_router"          # the router's attribute (and name part) in a LoRA layer
INDIVIDUAL, REST = "local", "global"   # the two adapters' PEFT names
_SAVED = "_fedalt_saved_scaling"


def attach_routers(module: nn.Module) -> int:
    """Give every LoRA layer of ``module`` a zero-initialized router and the hooks that apply
    it; returns how many layers got one. The hooks read everything from the layer itself (no
    closure), so a deep copy of the model routes with its own copy of the router."""
    count = 0
    for layer in module.modules():
        if isinstance(layer, LoraLayer) and not hasattr(layer, ROUTER_ATTR):
            router = nn.Linear(int(layer.in_features), 2)
            nn.init.zeros_(router.weight)
            nn.init.zeros_(router.bias)
            layer.add_module(ROUTER_ATTR, router)
            layer.register_forward_pre_hook(_route)
            layer.register_forward_hook(_unroute)
            count += 1
    return count


def _route(layer: Any, args: tuple[Any, ...]) -> None:
    """Before the layer runs: scale each adapter by its per-token router weight (a tensor
    scaling broadcasts over the batch and tokens in PEFT's LoRA forward)."""
    x = args[0]
    weights = torch.softmax(getattr(layer, ROUTER_ATTR)(x).float(), dim=-1)
    # a forward that raised left its saved plain scalings behind: reuse them, never the tensors
    saved = getattr(layer, _SAVED, None) or {
        name: layer.scaling[name] for name in (INDIVIDUAL, REST) if name in layer.scaling}
    setattr(layer, _SAVED, saved)
    for index, name in enumerate((INDIVIDUAL, REST)):
        if name in saved:
            layer.scaling[name] = saved[name] * weights[..., index:index + 1]


def _unroute(layer: Any, args: tuple[Any, ...], output: Any) -> None:
    """After the layer runs: the plain scalings again (exports and merges never see a tensor)."""
    layer.scaling.update(getattr(layer, _SAVED, {}))
    setattr(layer, _SAVED, {})


def rest_of_world_name(name: str) -> str:
    """The RoW adapter's name of an individual-adapter tensor (``...lora_A.local...`` ->
    ``...lora_A.global...``); other names are unchanged."""
    for factor in ("lora_A", "lora_B"):
        name = name.replace(f".{factor}.{INDIVIDUAL}.", f".{factor}.{REST}.")
    return name


def rest_of_world(uploads: Mapping[str, Payload], client: str, initial: Payload) -> Payload:
    """What the server sends ``client``: the unweighted mean of every other client's latest
    upload (in name order, float64 sums), or ``initial`` when no other client has uploaded
    yet, under the RoW adapter's names."""
    others = [(uploads[name], 1) for name in sorted(uploads) if name != client]
    mean = weighted_average(others) if others else initial
    return {rest_of_world_name(name): tensor.clone() for name, tensor in mean.items()}
