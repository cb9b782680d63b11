"""MAE pretraining: masking, determinism, outputs, and the ``pretrain`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from duallora.cli import main
from duallora.model import build_convvit, load_foundation_model, read_state_dict
from duallora.model.mae import MaskedAutoencoder, random_token_mask, slab_token_mask
from duallora.model.pretrain import (
    PretrainConfig,
    build_mae,
    epoch_mean_losses,
    final_loss,
    pretrain,
    train_mae,
)

SMALL = (32, 32, 4)


def small_config(**changes: object) -> PretrainConfig:
    fields = {"size": "tutorial", "image_size": SMALL, "epochs": 2, "batch_size": 4,
              "warmup_epochs": 1, "seed": 0}
    fields.update(changes)
    return PretrainConfig(**fields)


def test_token_mask_hides_three_quarters_per_sample() -> None:
    removed = random_token_mask(5, 64, 0.75, torch.Generator().manual_seed(0))
    assert removed.dtype == torch.bool
    assert removed.sum(dim=1).tolist() == [48] * 5
    assert len({tuple(r.tolist()) for r in removed}) == 5  # a different mask per sample


def test_slab_mask_hides_whole_runs_of_slices_and_reduces_to_the_token_mask() -> None:
    grid = (2, 3, 8)
    removed = slab_token_mask(4, grid, 0.75, slab=4, generator=torch.Generator().manual_seed(0))
    assert removed.shape == (4, 2 * 3 * 8)
    slabs = removed.reshape(4, 2, 3, 2, 4)  # (batch, h, w, slab index, slice in slab)
    assert bool((slabs.all(dim=-1) | ~slabs.any(dim=-1)).all()), "a slab was split"
    assert slabs[..., 0].sum(dim=(1, 2, 3)).tolist() == [9] * 4  # 12 slabs, 3 kept each
    tube = slab_token_mask(3, grid, 0.5, slab=8, generator=torch.Generator().manual_seed(1))
    assert bool((tube.reshape(3, 6, 8).all(-1) | ~tube.reshape(3, 6, 8).any(-1)).all())
    per_token = slab_token_mask(5, grid, 0.75, slab=1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(per_token,
                       random_token_mask(5, 48, 0.75, torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="divide"):
        slab_token_mask(1, grid, 0.75, slab=3)


def test_training_with_slab_masking_differs_from_per_token_masking() -> None:
    frames = torch.rand(4, 1, *SMALL, generator=torch.Generator().manual_seed(4))
    _, per_token = train_mae(frames, small_config(epochs=1), progress=False)
    _, tubes = train_mae(frames, small_config(epochs=1, mask_slab=SMALL[2]), progress=False)
    assert [r["loss"] for r in per_token] != [r["loss"] for r in tubes]


def test_hidden_voxels_cannot_influence_what_the_encoder_sees() -> None:
    """Masked conv blocks zero hidden regions: changing a hidden patch leaves the loss terms of
    visible tokens' encoding unchanged (no leak through the conv stem)."""
    model: MaskedAutoencoder = build_mae(small_config())
    model.eval()
    image = torch.rand(1, 1, *SMALL, generator=torch.Generator().manual_seed(1))
    removed = torch.zeros(1, model.n_tokens, dtype=torch.bool)
    removed[0, 0] = True  # hide token 0 = voxels [0:16, 0:16, 0]
    changed = image.clone()
    changed[0, 0, :16, :16, 0] = torch.rand(16, 16)
    encode = model.enc_down_dict["sax"]
    with torch.no_grad():
        _, tokens_a = encode(image, removed)
        _, tokens_b = encode(changed, removed)
    torch.testing.assert_close(tokens_a[0, 1:], tokens_b[0, 1:])


def test_training_is_deterministic_and_learns() -> None:
    frames = torch.rand(8, 1, *SMALL, generator=torch.Generator().manual_seed(2))
    frames[:, :, 8:24, 8:24] += 0.5  # some structure to learn
    frames = frames.clamp(0, 1)
    cfg = small_config(epochs=6, lr=3e-3)
    model_a, log_a = train_mae(frames, cfg, progress=False)
    model_b, log_b = train_mae(frames, cfg, progress=False)
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    first = sum(r["loss"] for r in log_a[:2]) / 2
    last = sum(r["loss"] for r in log_a[-2:]) / 2
    assert last < 0.7 * first
    _, log_c = train_mae(frames, small_config(epochs=1, seed=1), progress=False)
    assert log_c[0]["loss"] != log_a[0]["loss"]


def test_epoch_hook_sees_every_epoch_without_changing_the_training() -> None:
    """The hook (used for snapshots and probes) runs after each epoch, sees the model as it is
    then, and a run with a hook ends with exactly the weights of a run without one."""
    frames = torch.rand(6, 1, *SMALL, generator=torch.Generator().manual_seed(3))
    cfg = small_config(epochs=3)
    seen: list[tuple[int, dict[str, torch.Tensor]]] = []

    def snapshot(epoch: int, model: torch.nn.Module) -> None:
        model.eval()  # a probe would switch modes; training must switch back
        seen.append((epoch, {k: v.clone() for k, v in model.state_dict().items()}))

    hooked, log_hooked = train_mae(frames, cfg, progress=False, on_epoch_end=snapshot)
    plain, log_plain = train_mae(frames, cfg, progress=False)
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert [r["loss"] for r in log_hooked] == [r["loss"] for r in log_plain]
    for name, value in plain.state_dict().items():
        assert torch.equal(hooked.state_dict()[name], value), name
        assert torch.equal(seen[-1][1][name], value), name
    weight = "encoder.blocks.0.attn.q.weight"
    assert not torch.equal(seen[0][1][weight], seen[1][1][weight])


def test_epoch_means_of_the_loss_log() -> None:
    log = [{"step": 0, "epoch": 0, "loss": 1.0}, {"step": 1, "epoch": 0, "loss": 0.5},
           {"step": 2, "epoch": 1, "loss": 0.25}]
    assert epoch_mean_losses(log) == {0: 0.75, 1: 0.25}
    assert final_loss(log) == 0.25


def test_pretrain_writes_weights_record_and_curve_that_load_as_a_foundation_model(
        harmonized_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fm.safetensors"
    record = pretrain(harmonized_dir, out, small_config(epochs=1, batch_size=16),
                      command="test", progress=False)
    assert out.is_file() and (tmp_path / "fm_loss.csv").is_file()
    assert (tmp_path / "fm_loss.png").stat().st_size > 0
    saved = json.loads((tmp_path / "fm.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["config"]["mask_ratio"] == 0.75 and saved["steps"] >= 1
    assert saved["data"]["n_volumes"] == 2 * saved["data"]["n_subjects"]
    state = read_state_dict(out)
    assert not any(k.startswith(("decoder.", "dec_", "pred_head_dict")) for k in state)
    assert state["enc_down_dict.sax.conv_blocks.0.patch_embed.conv.weight"].shape[1] == 1
    # fixed positional embeddings make the encoder usable at the preset's own input size too
    model = load_foundation_model(out, n_classes=2)
    reference = build_convvit("tutorial")
    assert model.config == reference.config
    x = torch.rand(1, 2, *model.config.image_size)
    assert torch.isfinite(model(x)).all()


def test_pretrain_command_rejects_bad_input(tmp_path: Path, capsys) -> None:
    code = main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "w.safetensors")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "metadata.csv missing" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(tmp_path / "w.safetensors")])
    code = main(["pretrain", "--data", str(tmp_path), "--mask-slab", "3",
                 "--out", str(tmp_path / "w.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--mask-slab must divide" in err and "16 slices" in err
