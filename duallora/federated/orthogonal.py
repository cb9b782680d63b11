"""Orthogonal dual LoRA: Med-DualLoRA plus a penalty that keeps the two adapters apart.

FedOPAL (Tupper & Gagne, arXiv 2510.12741) trains a global and a personal LoRA adapter together
and regularizes them towards orthogonality, so that what the site learns for itself does not
duplicate what every site learns together. The paper leaves open (or states for another model)
which matrices are compared and how strongly; the choices here were fixed before any run:

- **Matrices**: the down-projections ``A_g`` (r_g x d) and ``A_l`` (r_l x d) of each adapted
  layer. Their rows span the input subspaces each adapter reads; ``A_g A_l^T = 0`` means the
  two adapters read orthogonal input directions, so the local update cannot re-learn the
  global one. ``A`` rather than ``B``: ``B`` starts at zero, so a ``B``-side term has no
  gradient and no meaning in the first steps, while ``A`` is random from the start.
- **Normalization**: ``||A_g A_l^T||_F^2 / (||A_g||_F^2 ||A_l||_F^2)``, the (squared) overlap
  that does not depend on the factors' scale (so the penalty cannot be lowered by shrinking
  ``A``, only by rotating it), in ``[0, 1]``; the layers' values are averaged, so the weight
  does not depend on how many layers are adapted.
- **Weight**: ``--orth-weight`` 1.0: a penalty in ``[0, 1]`` next to a two-class cross-entropy
  whose chance level is ``ln 2 = 0.69``, so complete overlap costs about as much as knowing
  nothing about the task. Fixed by this rule, not tuned.

``overlap`` is the same quantity, measured on payloads (tests and reports use it to show the
penalty acts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from duallora.federated.client_model import ClientModel

GLOBAL_A, LOCAL_A = ".lora_A.global.", ".lora_A.local."


def factor_pairs(tensors: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
    """``(global A name, local A name)`` of every layer that has both, in name order."""
    return [(name, name.replace(GLOBAL_A, LOCAL_A)) for name in sorted(tensors)
            if GLOBAL_A in name and name.replace(GLOBAL_A, LOCAL_A) in tensors]


def layer_overlap(a_global: torch.Tensor, a_local: torch.Tensor) -> torch.Tensor:
    """``||A_g A_l^T||_F^2 / (||A_g||_F^2 ||A_l||_F^2)`` in float32 (0: orthogonal rows)."""
    a_g, a_l = a_global.float(), a_local.float()
    cross = (a_g @ a_l.T).pow(2).sum()
    return cross / (a_g.pow(2).sum() * a_l.pow(2).sum()).clamp(min=1e-12)


def mean_overlap(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The layers' mean ``layer_overlap`` (differentiable when ``tensors`` are parameters)."""
    pairs = factor_pairs(tensors)
    if not pairs:
        raise ValueError("no layer holds both a global and a local LoRA A factor")
    return torch.stack([layer_overlap(tensors[g], tensors[loc]) for g, loc in pairs]).mean()


def overlap(payload: Mapping[str, torch.Tensor]) -> float:
    """Normalized ``||A_g A_l^T||_F`` of a model given as tensors (the square root of
    ``mean_overlap``): 0 for orthogonal subspaces, 1 for one shared direction."""
    with torch.no_grad():
        return float(mean_overlap(payload).sqrt())


def orthogonality_penalty(model: ClientModel, weight: float
                          ) -> Callable[[], torch.Tensor] | None:
    """``weight * mean_overlap`` of the model's live parameters, as ``fit_epochs`` adds it to
    each step's loss; None when the weight is 0 (plain Med-DualLoRA)."""
    if weight <= 0:
        return None
    params = {name: model.params[name] for pair in factor_pairs(model.params) for name in pair}

    def penalty() -> torch.Tensor:
        return weight * mean_overlap(params)

    return penalty
