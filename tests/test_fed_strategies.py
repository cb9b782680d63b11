"""Strategy objects: what each trains and uploads, aggregation math, the wire format."""

from __future__ import annotations

import pytest
import torch

from duallora.base.config import STRATEGY_NAMES, TrainConfig
from duallora.errors import KitError
from duallora.federated.client_model import build_client_model
from duallora.federated.serialization import decode, encode, roundtrip
from duallora.federated.strategies import get_strategy, weighted_average

HEADS = ("pred_head_dict.sax.", "pred_head_dict.cls.")


def _model(strategy: str, **extra):
    config = TrainConfig(strategy=strategy, fm="none", model_size="test-tiny", **extra)
    return build_client_model(config)


@pytest.fixture(scope="module")
def models():
    return {name: _model(name) for name in STRATEGY_NAMES}


def _is_head(name: str) -> bool:
    return name.removeprefix("base_model.model.").startswith(HEADS)


def test_med_duallora_uploads_only_global_adapter_and_head(models) -> None:
    model = models["med_duallora"]
    upload = model.shared_payload()
    assert upload and all(".lora_A.global." in k or ".lora_B.global." in k or _is_head(k)
                          for k in upload)
    assert not any("local" in k for k in upload)
    assert sum(_is_head(k) for k in upload) == 4
    private = model.private_payload()
    assert private and all(".local." in k for k in private)
    # nothing but parameters travels: no data, no labels, no buffers
    assert set(upload) <= {name for name, _ in model.module.named_parameters()}
    # both adapters sit on the same layers
    assert ({k.replace(".global.", ".") for k in upload if "lora" in k}
            == {k.replace(".local.", ".") for k in private})


def test_strategy_groups(models) -> None:
    def names(model, part):
        return getattr(model, f"{part}_names")

    fedavg_lora, ffa, fedsa = models["fedavg_lora"], models["ffa_lora"], models["fedsa_lora"]
    assert names(fedavg_lora, "shared") == names(fedavg_lora, "trainable")
    assert not any("lora_A" in k for k in names(ffa, "trainable"))      # A frozen at init
    assert any("lora_B" in k for k in names(ffa, "shared"))
    assert all("lora_A" in k for k in names(fedsa, "shared"))           # only A travels
    assert any(_is_head(k) for k in names(fedsa, "private"))
    assert not names(models["single_site"], "shared")                         # nothing travels
    full = models["fedavg_full"]
    assert any(k.startswith("encoder.blocks.2.attn.q.weight") for k in names(full, "shared"))
    assert not any(k.startswith("encoder.blocks.0.") for k in names(full, "trainable"))
    assert models["centralized"].strategy.pooled
    # requires_grad follows the strategy exactly
    for model in models.values():
        flagged = sorted(n for n, p in model.module.named_parameters() if p.requires_grad)
        assert flagged == model.trainable_names, model.strategy.name
    head_local = _model("med_duallora", head="private")
    assert not any(_is_head(k) for k in head_local.shared_names)
    assert not head_local.strategy.has_global_model


def test_identical_init_everywhere() -> None:
    first, second = _model("med_duallora"), _model("med_duallora")
    for key, value in first.shared_payload().items():
        assert torch.equal(value, second.shared_payload()[key])


def test_weighted_average_matches_hand_computation() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0]])}
    b = {"w": torch.tensor([4.0, -1.0]), "b": torch.tensor([[3.0]])}
    c = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([[6.0]])}
    result = get_strategy("fedavg_lora").aggregate([(a, 1), (b, 2), (c, 3)])
    # (1*[1,2] + 2*[4,-1] + 3*[0,0]) / 6 = [9/6, 0]; (0 + 6 + 18) / 6 = 4
    torch.testing.assert_close(result["w"], torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(result["b"], torch.tensor([[4.0]]))
    with pytest.raises(ValueError):
        weighted_average([(a, 1), ({"w": a["w"]}, 1)])


def test_serialization_roundtrip_and_size(models) -> None:
    payload = models["med_duallora"].shared_payload()
    blob = encode(payload)
    back = decode(blob)
    assert set(back) == set(payload)
    assert all(torch.equal(back[k], payload[k]) for k in payload)
    _, size = roundtrip(payload)
    n_values = sum(t.numel() for t in payload.values())
    assert size == len(blob) and 4 * n_values < size < 4 * n_values + 20_000


def test_unknown_strategy_is_a_clear_error() -> None:
    with pytest.raises(KitError, match="unknown strategy"):
        get_strategy("fedprox")
    with pytest.raises(KitError, match="unknown strategy"):
        TrainConfig(strategy="fedprox").validate()
