"""PEFT dual LoRA on the real ConvViT (tiny size): the DualLoRA sum, trainable flags, save/load."""

from __future__ import annotations

import pytest
import torch

from duallora.base.config import LORA_TARGETS
from duallora.errors import KitError
from duallora.federated.adapters import (
    AdapterSpec,
    attach_adapters,
    core_model,
    load_adapters,
    merged_model,
    resolve_blocks,
    save_adapters,
    set_active_adapters,
)
from duallora.model import build_convvit


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    return build_convvit("test-tiny", seed=seed).eval()


def _dual(seed: int = 0):
    torch.manual_seed(seed)
    specs = [AdapterSpec("global", 4, 8.0), AdapterSpec("local", 2, 6.0)]
    model = attach_adapters(_tiny_model(), specs, [1, 2], LORA_TARGETS)
    # B starts at zero (PEFT's init): give every factor values so the sum is not trivially W0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model, specs


def test_dual_lora_weight_is_w0_plus_both_scaled_products() -> None:
    model, (g, loc) = _dual()
    assert (g.scale, loc.scale) == (2.0, 3.0)
    layer = core_model(model).encoder.blocks[2].attn.kv
    w0 = layer.base_layer.weight.detach().clone()
    a_g, b_g = layer.lora_A["global"].weight, layer.lora_B["global"].weight
    a_l, b_l = layer.lora_A["local"].weight, layer.lora_B["local"].weight
    expected = w0 + g.scale * b_g @ a_g + loc.scale * b_l @ a_l
    assert layer.scaling == {"global": g.scale, "local": loc.scale}
    # the layer's output equals a plain linear map with the summed weight
    x = torch.randn(5, w0.shape[1])
    with torch.no_grad():
        out = layer(x)
        reference = x @ expected.T + layer.base_layer.bias
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    # and merging both adapters writes exactly that weight into the layer
    merged = merged_model(model, ["global", "local"])
    torch.testing.assert_close(merged.encoder.blocks[2].attn.kv.weight, expected.detach(),
                               rtol=1e-5, atol=1e-6)
    # switching the local adapter off leaves W0 + s_g B_g A_g
    set_active_adapters(model, ["global"])
    with torch.no_grad():
        only_global = x @ (w0 + g.scale * b_g @ a_g).T + layer.base_layer.bias
        torch.testing.assert_close(layer(x), only_global, rtol=1e-5, atol=1e-6)


def test_both_adapters_trainable_and_backbone_frozen() -> None:
    model, _ = _dual()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trainable"
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert any(".global." in n for n in trainable) and any(".local." in n for n in trainable)
    # adapters only where asked: blocks 1 and 2, the five targets, two factors, two adapters
    assert len(trainable) == 2 * len(LORA_TARGETS) * 2 * 2
    assert not any("blocks.0." in n for n in trainable)
    # gradients reach both adapters through one loss
    x = torch.rand(2, 2, 32, 32, 16)
    model(x).sum().backward()
    for name, param in model.named_parameters():
        if name in trainable and "lora_A" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_adapters_save_and_load_in_peft_format(tmp_path) -> None:
    model, _ = _dual()
    x = torch.rand(2, 2, 32, 32, 16)
    with torch.no_grad():
        expected = model(x)
    folders = save_adapters(model, tmp_path, ["global", "local"])
    for folder in folders:
        assert (folder / "adapter_config.json").is_file()
        assert (folder / "adapter_model.safetensors").is_file()
    reloaded = load_adapters(_tiny_model(), tmp_path, ["global", "local"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), expected)
        torch.testing.assert_close(merged_model(reloaded, ["global", "local"])(x), expected,
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(KitError):
        load_adapters(_tiny_model(), tmp_path, ["missing"])


def test_resolve_blocks() -> None:
    assert resolve_blocks("last2", 6) == [4, 5]
    assert resolve_blocks("all", 3) == [0, 1, 2]
    assert resolve_blocks("3, 1", 6) == [1, 3]
    for bad in ("last9", "7", "x"):
        with pytest.raises(KitError):
            resolve_blocks(bad, 6)
