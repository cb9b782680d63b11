"""Tables of the data and the model before any training (notebooks 01 and 02): subjects per
vendor, model sizes and LoRA costs, embedding projections, how well features reveal the vendor.

Pure functions from data already computed (metadata, models, features) to ``DataFrame`` s or
arrays, so notebooks only call and display, and tests can check every number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from duallora.base.config import LORA_TARGETS
from duallora.plots.style import LABEL_NAMES, VENDORS


def cohort_table(metadata: pd.DataFrame) -> pd.DataFrame:
    """Subjects per vendor (rows, kit order) and label x split (columns), with totals."""
    frame = metadata.assign(label_name=metadata["label"].map(LABEL_NAMES))
    table = pd.crosstab(frame["vendor"], [frame["label_name"], frame["split"]])
    order = [v for v in VENDORS if v in table.index] + \
        sorted(v for v in table.index if v not in VENDORS)
    columns = [(lab, split) for lab in ("NOR", "disease") for split in ("train", "val", "test")]
    table = table.reindex(index=order, columns=pd.MultiIndex.from_tuples(columns),
                          fill_value=0)
    table.columns = [f"{lab} {split}" for lab, split in table.columns]
    table["NOR"] = table[[c for c in table.columns if c.startswith("NOR ")]].sum(axis=1)
    table["disease"] = table[[c for c in table.columns if c.startswith("disease ")]].sum(axis=1)
    table["total"] = table["NOR"] + table["disease"]
    table.loc["all"] = table.sum(axis=0)
    table.index.name = "vendor"
    return table


def lora_parameter_count(model: torch.nn.Module, blocks: Sequence[int], rank: int,
                         targets: Sequence[str] = LORA_TARGETS) -> int:
    """Parameters of one LoRA adapter of ``rank`` on ``targets`` of ``blocks``:
    ``rank * (in + out)`` per adapted linear layer."""
    modules = dict(model.named_modules())
    total = 0
    for block in blocks:
        for target in targets:
            layer = modules[f"encoder.blocks.{block}.{target}"]
            total += rank * (layer.in_features + layer.out_features)
    return total


def parameter_table(sizes: Sequence[str] | None = None, rank: int = 4) -> pd.DataFrame:
    """One row per model size: shape, tokens, parameters, and what one LoRA adapter adds.

    Models are built on PyTorch's ``meta`` device (shapes only, no memory), so even ``huge``
    (637 M parameters) costs nothing to count.
    """
    from duallora.base.presets import TEST_SIZES
    from duallora.model import PRESETS, build_convvit

    rows = []
    for size in sizes or [s for s in PRESETS if s not in TEST_SIZES]:
        cfg = PRESETS[size]
        with torch.device("meta"):
            model = build_convvit(size)
        total = sum(p.numel() for p in model.parameters())
        per_block = sum(p.numel() for p in model.encoder.blocks[0].parameters())
        n_blocks = int(model.n_blocks)
        last2 = list(range(max(0, n_blocks - 2), n_blocks))
        lora_last2 = lora_parameter_count(model, last2, rank)
        lora_all = lora_parameter_count(model, range(n_blocks), rank)
        rows.append({
            "size": size, "embed_dim": cfg.embed_dim, "blocks": n_blocks,
            "heads": cfg.n_heads, "input": "x".join(map(str, cfg.image_size)),
            "tokens": int(np.prod(cfg.grid_size)), "params": int(total),
            "params_per_block": int(per_block),
            f"lora_r{rank}_last2": lora_last2, f"lora_r{rank}_all": lora_all,
            "lora_last2_pct": 100.0 * lora_last2 / total,
        })
    return pd.DataFrame(rows)


def project_embeddings(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2D projection of ``(N, d)`` features: ``pca`` or ``tsne`` (scikit-learn), standardised
    first so no single channel dominates."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    ).fit_transform(x)
    raise ValueError(f"unknown projection {method!r}; use 'pca' or 'tsne'")


def vendor_separability(features: np.ndarray, vendors: Sequence[str], seed: int = 0) -> float:
    """Cross-validated accuracy of a linear classifier predicting the vendor from features:
    near chance (1 / number of vendors) means no vendor shift, near 1 a strong one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(vendors)
    folds = int(min(5, np.unique(labels, return_counts=True)[1].min()))
    if folds < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, features, labels, cv=cv).mean())
