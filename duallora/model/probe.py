"""Linear probing: how much label information a frozen encoder's features carry.

The standard yardstick for a foundation model: freeze it, embed every subject, and fit only a
logistic regression on top. Out-of-fold predictions from fixed stratified folds make the score
deterministic and free of train/test leakage.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@torch.no_grad()
def embed_all(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """``model.embed`` over ``x`` in batches, in eval mode -> (N, d) numpy features."""
    model.eval()
    return torch.cat([model.embed(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
                     ).cpu().numpy()


def linear_probe_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0,
                        folds: int = 5) -> tuple[float, float]:
    """Cross-validated logistic-regression probe -> (ROC AUC, balanced accuracy).

    Features are standardised inside each fold, classes are balanced (NOR is the minority).
    """
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced"))
    prob = cross_val_predict(probe, features, labels, cv=splitter, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, prob)), float(balanced_accuracy_score(labels, prob > 0.5))
