"""Loading CineMA's MAE checkpoint layout, strict fine-tuned loading, and the hub helper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from duallora.errors import KitError
from duallora.model import (
    CheckpointError,
    build_convvit,
    load_cinema_pretrained,
    load_finetuned,
    save_weights,
)
from duallora.model.checkpoints import FIRST_CONV_KEY, POS_EMBED_KEY
from duallora.model.hub import cinema_file, finetuned_cvd_file

# A small model with the published checkpoint's depth (12 blocks), so that the MAE manifest's key
# list maps one-to-one onto it.
SMALL = {"image_size": (32, 32, 2), "depth": 12, "conv_chans": (8, 16)}


def small_model(seed: int = 0) -> torch.nn.Module:
    return build_convvit("tiny", seed=seed, **SMALL)


def synthetic_mae_checkpoint(manifest: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every key of CineMA's MAE manifest, sized for ``model`` where the model has that key
    (first conv with one input channel, as in the MAE) and arbitrary elsewhere."""
    own = model.state_dict()
    gen = torch.Generator().manual_seed(3)
    state = {}
    for row in manifest.read_text().splitlines()[1:]:
        key = row.split("\t")[0]
        shape = tuple(own[key].shape) if key in own else (3, 2)
        if key == FIRST_CONV_KEY:
            shape = (shape[0], 1, *shape[2:])
        state[key] = torch.randn(shape, generator=gen)
    return state


@pytest.fixture()
def mae_state(reference_dir: Path) -> dict[str, torch.Tensor]:
    return synthetic_mae_checkpoint(reference_dir / "mae_pretrained_base_4views.tsv",
                                    small_model())


def test_loads_exactly_the_sax_encoder_and_expands_the_first_conv(mae_state, tmp_path) -> None:
    path = save_weights(mae_state, tmp_path / "cinema.safetensors")
    model = small_model(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_cinema_pretrained(model, path)
    after = model.state_dict()

    encoder_keys = {k for k in after if k.startswith(("enc_down_dict.sax.", "enc_fusion_dict.sax.",
                                                      "encoder.")) and k != POS_EMBED_KEY}
    assert set(report.loaded) == encoder_keys
    assert report.expanded == [FIRST_CONV_KEY]
    for key in encoder_keys - {FIRST_CONV_KEY}:
        assert torch.equal(after[key], mae_state[key]), key
    one_frame = mae_state[FIRST_CONV_KEY]
    assert torch.equal(after[FIRST_CONV_KEY], torch.cat([one_frame, one_frame], dim=1))
    # heads, fixed positions: the model's own; decoder, mask tokens, other views: dropped
    for key in [POS_EMBED_KEY, *model.head_parameter_names()]:
        assert torch.equal(after[key], before[key]), key
    assert "pred_head_dict.sax.weight" in report.dropped  # MAE's reconstruction head
    assert any(k.startswith("decoder.") for k in report.dropped)
    assert any(k.startswith("enc_down_dict.lax_4c.") for k in report.dropped)
    assert "dec_embed_dict.sax.mask_token" in report.dropped
    assert len(report.loaded) + len(report.dropped) == len(mae_state)


def test_mean_frame_init_divides_by_the_number_of_frames(mae_state) -> None:
    model = small_model()
    load_cinema_pretrained(model, mae_state, frame_init="mean")
    expected = mae_state[FIRST_CONV_KEY].repeat(1, 2, 1, 1, 1) / 2
    assert torch.equal(model.state_dict()[FIRST_CONV_KEY], expected)


def test_rejects_a_missing_encoder_key(mae_state) -> None:
    del mae_state["encoder.blocks.7.mlp.fc1.bias"]
    with pytest.raises(CheckpointError, match=r"lacks 1 encoder parameter.*blocks\.7\.mlp\.fc1"):
        load_cinema_pretrained(small_model(), mae_state)


def test_rejects_a_mis_shaped_encoder_key(mae_state) -> None:
    mae_state["enc_fusion_dict.sax.down_convs.1.weight"] = torch.zeros(16, 16, 1, 2, 1)
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="mis-shaped.*down_convs.1"):
        load_cinema_pretrained(model, mae_state)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_rejects_a_deeper_encoder_and_a_non_cinema_file(mae_state) -> None:
    shallow = build_convvit("tiny", image_size=(32, 32, 2), depth=11, conv_chans=(8, 16))
    with pytest.raises(CheckpointError, match="encoder.blocks.11"):
        load_cinema_pretrained(shallow, mae_state)
    with pytest.raises(CheckpointError, match="no 'sax' encoder"):
        load_cinema_pretrained(small_model(), {"decoder.norm.weight": torch.ones(3)})


def test_strict_finetuned_loading(tmp_path) -> None:
    source = small_model(seed=4)
    path = save_weights(source.state_dict(), tmp_path / "ft.safetensors")
    target = load_finetuned(small_model(seed=5), path)
    x = torch.rand(2, 2, 32, 32, 2)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))
    broken = dict(source.state_dict())
    broken.pop("pred_head_dict.cls.bias")
    with pytest.raises(CheckpointError, match="missing 1"):
        load_finetuned(small_model(), broken)
    with pytest.raises(CheckpointError, match="not found"):
        load_finetuned(small_model(), tmp_path / "absent.safetensors")


def test_hub_helper_uses_a_local_copy_and_explains_offline_failure(tmp_path, monkeypatch) -> None:
    local = tmp_path / "pretrained" / "cinema.safetensors"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"x")
    assert cinema_file("pretrained/cinema.safetensors", local_dir=tmp_path) == local

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    wanted = finetuned_cvd_file("acdc", seed=0)
    assert wanted == "finetuned/classification_cvd/acdc_sax/acdc_sax_0.safetensors"
    with pytest.raises(KitError) as info:
        cinema_file(wanted, local_dir=tmp_path)
    message = str(info.value)
    assert f"https://huggingface.co/mathpluscode/CineMA/resolve/main/{wanted}" in message
    assert str(tmp_path / wanted) in message
