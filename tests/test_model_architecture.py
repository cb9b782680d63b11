"""ConvViT structure: CineMA's names, shapes and sizes; input validation; base round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from duallora.model import PRESETS, build_convvit, load_finetuned, save_weights
from duallora.model.checkpoints import read_state_dict


def read_manifest(path: Path) -> dict[str, tuple[int, ...]]:
    rows = path.read_text().splitlines()[1:]
    manifest = {}
    for row in rows:
        key, shape, _kind = row.split("\t")
        manifest[key] = tuple(int(s) for s in shape.split("x"))
    return manifest


def expected_parameter_count(embed: int, depth: int, conv_chans: tuple[int, ...],
                             conv_blocks: int, grid: tuple[int, int, int], frames: int = 2,
                             classes: int = 2) -> int:
    """Layer-by-layer count of CineMA's ConvViT (sax), written independently of the model."""
    c0, c1 = conv_chans

    def masked_conv_block(c: int) -> int:
        norms = 4 * c
        pointwise = 2 * (c * c + c)
        depthwise = c * 125 + c
        mlp = (c * 4 * c + 4 * c) + (4 * c * c + c)
        return norms + pointwise + depthwise + mlp

    stem = (c0 * frames * 16 + c0 + 2 * c0) + conv_blocks * masked_conv_block(c0)
    stem += (c1 * c0 * 4 + c1 + 2 * c1) + conv_blocks * masked_conv_block(c1)
    tokens = (embed * c1 * 4 + embed) + (embed * embed + embed)
    pos_embed = grid[0] * grid[1] * grid[2] * embed
    fusion = (embed * c0 * 16 + embed) + (embed * c1 * 4 + embed) + 2 * embed
    block = 4 * embed + (embed * embed + embed) + (2 * embed * embed + 2 * embed) \
        + (embed * embed + embed) + (4 * embed * embed + 4 * embed) + (4 * embed * embed + embed)
    encoder = embed + depth * block + 2 * embed
    heads = 2 * (embed * classes + classes)
    return stem + tokens + pos_embed + fusion + encoder + heads


@pytest.fixture(scope="module")
def base_model() -> torch.nn.Module:
    """The one base instance of this test module: every weight at full size (about 350 MB),
    on a small 32x32x2 input so that a forward pass costs milliseconds, not a minute on CPU."""
    return build_convvit("base", image_size=(32, 32, 2), seed=0).eval()


def test_base_names_and_shapes_match_cinema_manifest(reference_dir: Path) -> None:
    manifest = read_manifest(reference_dir / "convvit_sax_base_2frame_2class.tsv")
    with torch.device("meta"):
        model = build_convvit("base")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(manifest) - set(ours)) == []
    assert sorted(set(ours) - set(manifest)) == []
    assert {k: s for k, s in ours.items() if manifest[k] != s} == {}
    assert sum(p.numel() for p in model.parameters()) == 89_494_212


@pytest.mark.parametrize("size", sorted(PRESETS))
def test_parameter_count_follows_size_table(size: str) -> None:
    cfg = PRESETS[size]
    with torch.device("meta"):
        model = build_convvit(size)
    expected = expected_parameter_count(cfg.embed_dim, cfg.depth, cfg.conv_chans,
                                        cfg.conv_n_blocks, cfg.grid_size)
    assert sum(p.numel() for p in model.parameters()) == expected
    if size == "base":
        assert expected == 89_494_212


def test_size_table_matches_cinema() -> None:
    table = {s: (PRESETS[s].embed_dim, PRESETS[s].depth, PRESETS[s].n_heads)
             for s in ("tiny", "base", "large", "huge")}
    assert table == {"tiny": (16, 1, 2), "base": (768, 12, 12), "large": (1024, 24, 16),
                     "huge": (1280, 32, 16)}


def test_lora_targets_and_heads_are_named_as_cinema() -> None:
    model = build_convvit("tutorial", image_size=(32, 32, 4), seed=0)
    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for i in range(model.n_blocks):
        for leaf in ("attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            assert f"encoder.blocks.{i}.{leaf}" in linear
    assert model.head_parameter_names() == [
        "pred_head_dict.sax.weight", "pred_head_dict.sax.bias",
        "pred_head_dict.cls.weight", "pred_head_dict.cls.bias"]
    assert model.enc_down_dict["sax"].pos_embed.requires_grad is False


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_convvit("tutorial", image_size=(32, 32, 4), seed=7)
    after = torch.rand(1)
    b = build_convvit("tutorial", image_size=(32, 32, 4), seed=7)
    c = build_convvit("tutorial", image_size=(32, 32, 4), seed=8)
    assert torch.equal(before, after)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.encoder.blocks[0].attn.q.weight, c.encoder.blocks[0].attn.q.weight)


@pytest.mark.parametrize(("bad", "message"), [
    (torch.rand(2, 2, 32, 32), "batch, frames"),
    (torch.rand(2, 3, 32, 32, 4), "2 frame"),
    (torch.rand(2, 2, 32, 32, 8), "volumes of size"),
    ((torch.rand(2, 2, 32, 32, 4) * 255).to(torch.uint8), "floating point"),
    (torch.rand(2, 2, 32, 32, 4, dtype=torch.float64), "dtype"),
])
def test_bad_inputs_raise_clear_errors(bad: torch.Tensor, message: str) -> None:
    model = build_convvit("tutorial", image_size=(32, 32, 4), seed=0)
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_nan_input_is_rejected() -> None:
    model = build_convvit("tutorial", image_size=(32, 32, 4), seed=0)
    x = torch.rand(1, 2, 32, 32, 4)
    x[0, 1, 3, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(x)


def test_unknown_size_and_bad_image_size_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model size"):
        build_convvit("gigantic")
    with pytest.raises(ValueError, match="divisible"):
        build_convvit("tutorial", image_size=(40, 40, 4))


def test_base_checkpoint_round_trip_reproduces_logits(base_model: torch.nn.Module,
                                                      tmp_path: Path) -> None:
    x = torch.rand(2, 2, 32, 32, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = base_model(x)
    path = save_weights(base_model.state_dict(), tmp_path / "finetuned.safetensors")
    assert set(read_state_dict(path)) == set(base_model.state_dict())
    with torch.no_grad():  # disturb every weight, then restore from the file
        for p in base_model.parameters():
            p.add_(0.01)
        assert not torch.allclose(base_model(x), logits)
    load_finetuned(base_model, path)
    with torch.no_grad():
        assert torch.equal(base_model(x), logits)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
