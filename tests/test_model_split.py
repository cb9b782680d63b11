"""forward_prefix / forward_suffix reproduce forward exactly; embed and cached states behave."""

from __future__ import annotations

import pytest
import torch

from duallora.model import build_convvit

IMAGE = (32, 32, 4)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_convvit("tutorial", image_size=IMAGE, seed=0).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(3, 2, *IMAGE, generator=torch.Generator().manual_seed(1))


def test_every_split_point_equals_the_full_forward(model, batch) -> None:
    with torch.no_grad():
        full = model(batch)
        for k in range(model.n_blocks + 1):
            state = model.forward_prefix(batch, k)
            assert torch.equal(model.forward_suffix(state, k), full), f"split at {k}"
    assert model.n_blocks == 6


def test_prefix_state_is_batch_first_and_can_be_sliced_and_concatenated(model, batch) -> None:
    k = model.n_blocks - 2
    with torch.no_grad():
        state = model.forward_prefix(batch, k)
        assert set(state) == {"tokens", "skip0", "skip1"}
        assert all(v.shape[0] == len(batch) for v in state.values())
        assert state["tokens"].shape == (3, 1 + 2 * 2 * 4, 96)
        # a cache built per sample and concatenated gives the batch's logits
        parts = [model.forward_prefix(batch[i:i + 1], k) for i in range(len(batch))]
        joined = {key: torch.cat([p[key] for p in parts]) for key in state}
        torch.testing.assert_close(model.forward_suffix(joined, k), model(batch))


def test_gradients_reach_only_suffix_blocks_from_a_cached_state(model, batch) -> None:
    k = 4
    with torch.no_grad():
        state = model.forward_prefix(batch, k)
    model.zero_grad(set_to_none=True)
    model.forward_suffix(state, k).sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert "encoder.blocks.4.attn.q.weight" in grads
    assert "encoder.blocks.5.mlp.fc2.weight" in grads
    assert "encoder.blocks.3.attn.q.weight" not in grads
    assert not grads & set(model.prefix_parameter_names(k))
    model.zero_grad(set_to_none=True)


def test_embed_is_pooled_features_matching_the_heads(model, batch) -> None:
    with torch.no_grad():
        features = model.embed(batch)
        assert features.shape == (3, 96)
        cls, patches = model.suffix_features(model.forward_prefix(batch, 2), 2)
        torch.testing.assert_close(features, 0.5 * (cls[:, 0] + patches.mean(dim=1)))
        assert torch.equal(model.embed_from_state(model.forward_prefix(batch, 3), 3), features)


def test_bad_split_points_and_states_are_rejected(model, batch) -> None:
    with pytest.raises(ValueError, match="split point"):
        model.forward_prefix(batch, model.n_blocks + 1)
    with pytest.raises(ValueError, match="split point"):
        model.forward_suffix({}, -1)
    with torch.no_grad():
        state = model.forward_prefix(batch, 1)
    with pytest.raises(ValueError, match="keys"):
        model.forward_suffix({"tokens": state["tokens"]}, 1)
    with pytest.raises(ValueError, match="tokens"):
        model.forward_suffix({**state, "tokens": state["tokens"][:, :5]}, 1)
