"""Linear probing: how much label information a frozen encoder's features carry.

The standard yardstick for a foundation model: freeze it, embed every subject, and fit only a
logistic regression on top. Out-of-fold predictions from fixed stratified folds make the score
deterministic and free of train/test leakage.

Three readouts (:func:`probe_features`), because a probe can only find what its readout keeps:

- ``pooled``: what the classification heads read (mean of CLS and mean fused patch token).
- ``tokens``: every encoder token after the final norm, flattened: keeps where things are, which
  mean pooling throws away.
- ``per_frame``: a one-frame model (the MAE's native input) embeds each frame on its own and the
  pooled features are concatenated, so a pretrained encoder never sees the ED+ES blend that the
  two-frame classifier feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from duallora.model.backbone import TOKENS_KEY

Readout = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
POOLED_SHAPE = (16, 16, 4)


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """The raw-pixel probe's features: each frame average-pooled to :data:`POOLED_SHAPE`,
    flattened (N, frames * 16 * 16 * 4): the benchmark's ``raw_pixel_probe`` and the ``pixels``
    arm of the FM gate."""
    pooled = torch.nn.functional.adaptive_avg_pool3d(images.float(), POOLED_SHAPE)
    return pooled.flatten(1).numpy()


@torch.no_grad()
def _read_in_batches(read: Readout, model: torch.nn.Module, x: torch.Tensor,
                     batch_size: int, progress: bool = False) -> np.ndarray:
    """``read(model, batch)`` over ``x`` in eval mode; batches go to the model's device (so a
    GPU model probes CPU tensors) and features come back as one (N, k) CPU array."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    starts = tqdm(range(0, len(x), batch_size), desc="embed", unit="batch",
                  disable=not progress)
    return torch.cat([read(model, x[i:i + batch_size].to(device)).cpu()
                      for i in starts]).numpy()


def embed_all(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """``model.embed`` over ``x`` in batches, in eval mode -> (N, d) numpy features."""
    return _read_in_batches(lambda m, batch: m.embed(batch), model, x, batch_size)


READOUTS = ("pooled", "tokens", "per_frame")


def _token_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normed patch tokens after the last block; a ``per-frame`` model's state still holds one
    token stream per frame there (``tokens@ED``, ``tokens@ES``): both, side by side."""
    n = model.n_blocks
    state = model.forward_prefix(x, n)
    keys = [k for k in model.state_keys(n) if k.split("@")[0] == TOKENS_KEY]
    return torch.cat([model.encoder.norm(state[k])[:, 1:].flatten(1) for k in keys], dim=1)


def _per_frame_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.embed(x[:, f:f + 1]) for f in range(x.shape[1])], dim=1)


def probe_features(model: torch.nn.Module, x: torch.Tensor, readout: str = "pooled",
                   batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """Frozen features of ``x`` (N, frames, H, W, D) for one of :data:`READOUTS` -> (N, k)."""
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
    if readout == "per_frame" and model.n_frames != 1:
        raise ValueError(f"the per_frame readout needs a one-frame model (build it with "
                         f"n_frames=1), got {model.n_frames} frames")
    if readout == "pooled":
        return _read_in_batches(lambda m, batch: m.embed(batch), model, x, batch_size, progress)
    read = _token_features if readout == "tokens" else _per_frame_features
    return _read_in_batches(read, model, x, batch_size, progress)


def make_probe() -> Pipeline:
    """The kit's probe, fixed before any measurement: standardized features, L2 logistic
    regression with C=0.1 and balanced classes (NOR is the minority in natural cohorts)."""
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced"))


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """P(disease) of ``test_x`` from :func:`make_probe` fitted on the training subjects."""
    return make_probe().fit(train_x, train_y).predict_proba(test_x)[:, 1]


def oof_probabilities(features: np.ndarray, labels: np.ndarray, seed: int = 0,
                      folds: int = 5) -> np.ndarray:
    """Out-of-fold P(disease) of every subject: :func:`make_probe` under a shuffled
    ``StratifiedKFold(folds, random_state=seed)``, so each subject is scored by a probe that
    never saw it (deterministic for a seed)."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(make_probe(), features, labels, cv=splitter,
                             method="predict_proba")[:, 1]


def linear_probe_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0,
                        folds: int = 5) -> tuple[float, float]:
    """Cross-validated logistic-regression probe -> (ROC AUC, balanced accuracy).

    Features are standardised inside each fold, classes are balanced (NOR is the minority).
    """
    prob = oof_probabilities(features, labels, seed=seed, folds=folds)
    return float(roc_auc_score(labels, prob)), float(balanced_accuracy_score(labels, prob > 0.5))


def mean_probe_scores(features: np.ndarray, labels: np.ndarray,
                      seeds: Sequence[int] = (0, 1, 2)) -> tuple[float, float]:
    """:func:`linear_probe_scores` averaged over fold shuffles (one per seed): on a cohort of a
    few hundred subjects, a single shuffle moves the AUC by a few hundredths."""
    runs = [linear_probe_scores(features, labels, seed=seed) for seed in seeds]
    return float(np.mean([r[0] for r in runs])), float(np.mean([r[1] for r in runs]))


RIDGE_ALPHAS = np.logspace(-2, 4, 13)


def linear_probe_r2(features: np.ndarray, targets: np.ndarray, seed: int = 0,
                    folds: int = 5) -> np.ndarray:
    """Cross-validated ridge probe of continuous targets (N, t) -> out-of-fold R^2 per target.

    The regression twin of :func:`linear_probe_scores`, for anatomy (see
    ``duallora.data.cardiac_measures``): features standardised inside each fold, the ridge
    penalty chosen per target by inner (leave-one-out) cross-validation.
    Rows with a missing target are dropped.
    """
    targets = np.asarray(targets, dtype=float).reshape(len(features), -1)
    keep = np.isfinite(targets).all(axis=1)
    x, y = features[keep], targets[keep]
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True))
    predicted = cross_val_predict(probe, x, y, cv=splitter)
    return np.array([r2_score(y[:, j], predicted[:, j]) for j in range(y.shape[1])])
