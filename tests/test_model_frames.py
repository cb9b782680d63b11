"""The ``frames`` model option: repeat (CineMA's input), per-frame (fused) and trainable-stem."""

from __future__ import annotations

import pytest
import torch

from duallora.base.config import TrainConfig
from duallora.base.presets import FRAME_MODES
from duallora.errors import KitError
from duallora.federated.client import optimizer_groups, train_client
from duallora.federated.client_model import build_client_model
from duallora.federated.cohort import ClientData, SplitData
from duallora.federated.prefix_cache import prefix_key, prefix_states
from duallora.federated.prepare import use_prefix_cache
from duallora.federated.strategies import FUSION, STEM
from duallora.model import build_convvit, load_foundation_model, load_phantom_fm, save_weights
from duallora.model.backbone import TOKENS_KEY
from duallora.model.checkpoints import FIRST_CONV_KEY, read_state_dict
from duallora.model.foundation import phantom_fm_path
from duallora.model.frames import STEM_LR_MULT, frame_key

TINY = {"image_size": [32, 32, 4], "embed_dim": 32, "depth": 3, "n_heads": 2,
        "conv_chans": [8, 8]}
TINY_SHAPE = (32, 32, 4)


def _tiny(frames: str, seed: int = 0) -> torch.nn.Module:
    overrides = {**TINY, "conv_chans": tuple(TINY["conv_chans"])}
    image_size = overrides.pop("image_size")
    return build_convvit("tutorial", image_size=image_size, seed=seed, frames=frames,
                         **overrides).eval()


def _client(strategy: str, frames: str, **extra):
    return build_client_model(TrainConfig(strategy=strategy, fm="none", model_overrides=TINY,
                                          frames=frames, **extra))


def _bare(names: list[str]) -> set[str]:
    return {n.removeprefix("base_model.model.") for n in names}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def phantom_x() -> torch.Tensor:
    return torch.rand(1, 2, 64, 64, 16, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_swap_is_invisible_to_the_repeat_prefix(phantom_x) -> None:
    """The documented limit: with the kernel repeated for ED and ES, the frozen prefix sees
    ``w*ED + w*ES`` and cannot tell the frames apart (differences are rounding, ~1e-6)."""
    model = load_phantom_fm().eval()
    state = model.forward_prefix(phantom_x, 4)
    swapped = model.forward_prefix(phantom_x[:, [1, 0]], 4)
    for key, value in state.items():
        assert _relative(swapped[key], value) < 1e-4, key


@torch.no_grad()
def test_swap_changes_the_per_frame_prefix(phantom_x) -> None:
    model = load_phantom_fm(frames="per-frame").eval()
    state = model.forward_prefix(phantom_x, 4)
    swapped = model.forward_prefix(phantom_x[:, [1, 0]], 4)
    ed, es = frame_key(TOKENS_KEY, "ED"), frame_key(TOKENS_KEY, "ES")
    assert _relative(swapped[ed], state[ed]) > 1e-2          # the frozen state sees the order
    torch.testing.assert_close(swapped[ed], state[es])       # ... and the streams swap places
    # the fused model reads ED - ES as soon as U moves away from zero
    with torch.no_grad():
        model.frame_fusion.tokens.U.normal_(generator=torch.Generator().manual_seed(1))
    logits = model.forward_suffix(state, 4)
    assert not torch.allclose(model.forward_suffix(swapped, 4), logits)


def test_loaders_accept_frames(tmp_path) -> None:
    one_frame = read_state_dict(phantom_fm_path())[FIRST_CONV_KEY]
    per_frame = load_phantom_fm(frames="per-frame")
    assert torch.equal(per_frame.state_dict()[FIRST_CONV_KEY], one_frame)   # loads as is
    for frames in ("repeat", "trainable-stem"):
        weight = load_phantom_fm(frames=frames).state_dict()[FIRST_CONV_KEY]
        assert torch.equal(weight, torch.cat([one_frame, one_frame], dim=1)), frames
    probe = load_foundation_model(phantom_fm_path(), n_frames=1)  # the one-frame probe model
    assert probe.state_dict()[FIRST_CONV_KEY].shape[1] == 1
    # a fine-tuned two-frame classifier loads under repeat only (and reproduces its logits)
    source = build_convvit("tutorial", seed=3).eval()
    path = save_weights(source.state_dict(), tmp_path / "ft.safetensors", {"size": "tutorial"})
    x = torch.rand(1, 2, 64, 64, 16)
    with torch.no_grad():
        assert torch.equal(load_foundation_model(path).eval()(x), source(x))
    for frames in ("per-frame", "trainable-stem"):
        with pytest.raises(KitError, match="frames='repeat' only"):
            load_foundation_model(path, frames=frames)
    with pytest.raises(ValueError, match="frames must be one of"):
        build_convvit("tutorial", frames="sum")
    with pytest.raises(KitError, match="--frames must be one of"):
        _client("med_duallora", "sum")


@torch.no_grad()
def test_per_frame_fusion_starts_as_the_exact_mean() -> None:
    model = _tiny("per-frame")
    state = model.forward_prefix(torch.rand(2, 2, *TINY_SHAPE), model.n_blocks)
    keys = model.state_keys(model.n_blocks)  # fusion_block defaults to n_blocks
    assert len(keys) == 2 * 3 and frame_key(TOKENS_KEY, "ES") in keys
    fused = model.frame_fusion(state, TOKENS_KEY, ["skip0", "skip1"])
    for key, value in fused.items():
        assert torch.equal(value, (state[f"{key}@ED"] + state[f"{key}@ES"]) / 2), key


@torch.no_grad()
def test_prefix_and_suffix_keep_their_meaning_under_every_mode() -> None:
    x = torch.rand(2, 2, *TINY_SHAPE)
    for frames in FRAME_MODES:
        model = _tiny(frames)
        if frames == "per-frame":
            model.set_fusion_block(1)
            model.frame_fusion.tokens.U.normal_(generator=torch.Generator().manual_seed(2))
            model.frame_fusion.skips[1].U.normal_(generator=torch.Generator().manual_seed(3))
        full, embedding = model(x), model.embed(x)
        for k in range(model.n_blocks + 1):
            state = model.forward_prefix(x, k)
            assert set(state) == set(model.state_keys(k)), (frames, k)
            torch.testing.assert_close(model.forward_suffix(state, k), full, rtol=1e-5,
                                       atol=1e-6)
            torch.testing.assert_close(model.embed_from_state(state, k), embedding,
                                       rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="frames='per-frame'"):
        _tiny("per-frame").forward_suffix(_tiny("repeat").forward_prefix(x, 2), 2)
    with pytest.raises(ValueError, match="frames='repeat'"):
        _tiny("repeat").forward_suffix(_tiny("per-frame").forward_prefix(x, 2), 2)


def test_fusion_trains_and_travels_like_the_global_adapter() -> None:
    for strategy in ("med_duallora", "fedavg_lora", "local"):
        model = _client(strategy, "per-frame")
        fusion = {n for n, g in model.groups.items() if g == FUSION}
        assert fusion and all(n.startswith("frame_fusion.") for n in _bare(list(fusion)))
        assert fusion <= set(model.trainable_names)
        if strategy == "local":
            assert fusion <= set(model.private_names) and not model.shared_names
        else:
            assert fusion <= set(model.shared_payload())
        assert model.core.fusion_block == min(model.blocks)
        logits = model.forward({"x": torch.rand(2, 2, *TINY_SHAPE)}, None)
        logits.sum().backward()
        u = model.params[next(n for n in fusion if n.endswith("tokens.U"))]
        assert u.grad is not None and float(u.grad.abs().sum()) > 0
    # repeat: no fusion, no stem group, one optimizer group (the same optimizer as before)
    plain = _client("med_duallora", "repeat")
    assert not {FUSION, STEM} & set(plain.groups.values())
    groups = optimizer_groups(plain, TrainConfig(lr=1e-3), 1)  # shared | local adapter
    assert [g["lr"] for g in groups] == [1e-3, 1e-3]
    assert sum(len(g["params"]) for g in groups) == len(plain.trainable_parameters())


def test_trainable_stem_is_trained_shared_at_a_lower_lr_and_uncached() -> None:
    config = TrainConfig(strategy="med_duallora", fm="none", model_overrides=TINY,
                         frames="trainable-stem", lr=2e-3)
    model = build_client_model(config)
    stem = {n for n, g in model.groups.items() if g == STEM}
    assert _bare(list(stem)) == {FIRST_CONV_KEY, FIRST_CONV_KEY.replace("weight", "bias")}
    assert stem <= set(model.shared_names) and stem <= set(model.trainable_names)
    assert stem <= set(_client("local", "trainable-stem").private_names)
    assert use_prefix_cache(config, model) is None
    groups = optimizer_groups(model, config, 1)
    # shared | Med-DualLoRA's local adapter | the stem at the reduced rate
    assert [g["lr"] for g in groups] == [2e-3, 2e-3, 2e-3 * STEM_LR_MULT]
    assert {id(p) for p in groups[-1]["params"]} == {id(model.params[n]) for n in stem}
    assert sum(len(g["params"]) for g in groups) == len(model.trainable_names)


def test_per_frame_keeps_the_prefix_cache_and_agrees_with_the_full_forward() -> None:
    config = TrainConfig(strategy="med_duallora", fm="none", model_overrides=TINY,
                         frames="per-frame")
    model = build_client_model(config)
    upto = use_prefix_cache(config, model)
    assert upto == min(model.blocks) == model.core.fusion_block
    with torch.no_grad():
        for name in model.trainable_names:  # move every trained weight off its init
            model.params[name].add_(0.05 * torch.randn_like(model.params[name]))
    x = torch.rand(3, 2, *TINY_SHAPE)
    states = prefix_states(model.core, x, upto, 2, None)
    assert set(states) == set(model.core.state_keys(upto))
    with torch.no_grad():
        torch.testing.assert_close(model.forward(states, upto), model.forward({"x": x}, None),
                                   rtol=1e-5, atol=1e-6)
    # the cache key names the mode: same weights and images, another mode -> another key
    repeat, stem = _tiny("repeat"), _tiny("trainable-stem")
    assert prefix_key(repeat, x, 2) != prefix_key(stem, x, 2)


@pytest.mark.parametrize("frames", FRAME_MODES)
def test_one_training_round_under_each_mode(frames) -> None:
    config = TrainConfig(strategy="med_duallora", fm="none", model_overrides=TINY,
                         frames=frames, batch_size=4, local_epochs=1)
    model = build_client_model(config)
    gen = torch.Generator().manual_seed(0)
    split = SplitData({"x": torch.rand(6, 2, *TINY_SHAPE, generator=gen)},
                      torch.tensor([0, 1, 0, 1, 1, 0]), [f"s{i}" for i in range(6)])
    upto = use_prefix_cache(config, model)
    if upto is not None:
        split = SplitData(prefix_states(model.core, split.inputs["x"], upto, 4, None),
                          split.labels, split.subject_ids)
    data = ClientData("A", {"train": split}, upto, ["A"])
    update = train_client(model, None, None, data, config, round_idx=0)
    assert update.metrics["steps"] == 2
    changed = {n for n, v in update.upload.items() if not torch.equal(v, model.initial[n])}
    trained_group = {"per-frame": FUSION, "trainable-stem": STEM}.get(frames)
    if trained_group is not None:
        assert {n for n in changed if model.groups[n] == trained_group}, frames


def test_cinema_mae_layout_loads_as_is_under_per_frame(reference_dir) -> None:
    """CineMA's MAE checkpoint (its manifest, synthetic values): under per-frame the one-frame
    first conv needs no expansion; the rest loads exactly as under repeat."""
    from test_model_checkpoints import SMALL, synthetic_mae_checkpoint

    from duallora.model import load_cinema_pretrained

    model = build_convvit("tiny", seed=0, frames="per-frame", **SMALL)
    state = synthetic_mae_checkpoint(reference_dir / "mae_pretrained_base_4views.tsv", model)
    report = load_cinema_pretrained(model, state)
    assert report.expanded == []
    assert torch.equal(model.state_dict()[FIRST_CONV_KEY], state[FIRST_CONV_KEY])
    assert all(k.startswith("frame_fusion.") for k in report.kept_from_model
               if not k.startswith(("pred_head_dict.", "enc_down_dict.sax.pos_embed")))
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 2, 32, 32, 2)).shape == (1, 2)
