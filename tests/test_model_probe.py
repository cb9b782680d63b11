"""The linear probe's readouts and scores, on real forward passes of a small ConvViT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duallora.model import build_convvit, load_phantom_fm
from duallora.model.checkpoints import FIRST_CONV_KEY
from duallora.model.probe import (
    linear_probe_r2,
    linear_probe_scores,
    mean_probe_scores,
    probe_features,
)

IMAGE = (32, 32, 16)  # 2 x 2 x 16 tokens with the tutorial preset's 16x16x1 patches


def test_readouts_have_the_documented_shapes_and_contents() -> None:
    x = torch.rand(5, 2, *IMAGE, generator=torch.Generator().manual_seed(0))
    model = build_convvit("tutorial", image_size=IMAGE, seed=0)
    d, n_tokens = model.config.embed_dim, model.n_tokens
    pooled = probe_features(model, x, "pooled", batch_size=2)
    assert pooled.shape == (5, d)
    with torch.no_grad():
        np.testing.assert_allclose(pooled, model.embed(x).numpy(), rtol=1e-5, atol=1e-6)
    tokens = probe_features(model, x, "tokens", batch_size=2)
    assert tokens.shape == (5, n_tokens * d)
    # after the final LayerNorm (no affine change at init) every token has mean 0
    np.testing.assert_allclose(tokens.reshape(5, n_tokens, d).mean(-1), 0.0, atol=1e-5)

    one_frame = build_convvit("tutorial", image_size=IMAGE, n_frames=1, seed=0)
    per_frame = probe_features(one_frame, x, "per_frame", batch_size=2)
    assert per_frame.shape == (5, 2 * d)
    with torch.no_grad():
        np.testing.assert_allclose(per_frame[:, d:], one_frame.embed(x[:, 1:2]).numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(per_frame[:, :d], per_frame[:, d:])  # ED and ES differ


def test_readout_misuse_is_refused() -> None:
    x = torch.rand(2, 2, *IMAGE)
    model = build_convvit("tutorial", image_size=IMAGE, seed=0)
    with pytest.raises(ValueError, match="one-frame model"):
        probe_features(model, x, "per_frame")
    with pytest.raises(ValueError, match="unknown readout"):
        probe_features(model, x, "cls")


def test_probe_finds_a_planted_signal_and_not_a_shuffled_one() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 30)
    features = rng.normal(size=(60, 10))
    features[:, 3] += 3.0 * labels  # one informative feature among noise
    auc, bacc = linear_probe_scores(features, labels)
    assert auc > 0.8 and bacc > 0.7
    shuffled_auc, _ = linear_probe_scores(features, rng.permutation(labels))
    assert shuffled_auc < 0.7
    runs = [linear_probe_scores(features, labels, seed=s) for s in (0, 1, 2)]
    assert mean_probe_scores(features, labels) == pytest.approx(
        (np.mean([r[0] for r in runs]), np.mean([r[1] for r in runs])))
    assert mean_probe_scores(features, labels, seeds=[0]) == (auc, bacc)


def test_ridge_probe_recovers_planted_targets_and_skips_missing_rows() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(80, 12))
    linear = features[:, 2] - 0.5 * features[:, 7] + 0.1 * rng.normal(size=80)
    noise = rng.normal(size=80)  # unrelated to the features
    targets = np.column_stack([linear, noise])
    r2 = linear_probe_r2(features, targets)
    assert r2.shape == (2,)
    assert r2[0] > 0.9 and r2[1] < 0.1
    with_gaps = targets.copy()
    with_gaps[:5, 1] = np.nan  # e.g. subjects without segmentations
    r2_gaps = linear_probe_r2(features, with_gaps)
    assert np.isfinite(r2_gaps).all() and r2_gaps[0] > 0.9


def test_one_frame_fm_is_the_same_encoder_as_the_two_frame_one() -> None:
    two = load_phantom_fm("tutorial", seed=0)
    one = load_phantom_fm("tutorial", n_frames=1, seed=0)
    assert one.n_frames == 1 and two.n_frames == 2
    first_one, first_two = one.state_dict()[FIRST_CONV_KEY], two.state_dict()[FIRST_CONV_KEY]
    assert first_one.shape[1] == 1 and first_two.shape[1] == 2
    # the two-frame kernel repeats the one-frame one for ED and for ES
    torch.testing.assert_close(first_two, first_one.repeat(1, 2, 1, 1, 1))
    shared = [k for k in one.state_dict() if k != FIRST_CONV_KEY and "head" not in k]
    for key in shared:
        torch.testing.assert_close(one.state_dict()[key], two.state_dict()[key])
