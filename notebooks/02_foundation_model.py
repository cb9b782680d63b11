# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The foundation model: CineMA's ConvViT
#
# CineMA encodes a short-axis cine pair (ED and ES, `2 x 192 x 192 x 16` at 1 x 1 x 10 mm) with a
# **ConvViT**:
#
# 1. a convolutional stem (patch 4x4x1, then two 2x2x1 stages of masked conv blocks) that keeps
#    high-resolution *skip* maps;
# 2. a linear patch embedding into **tokens** of 16x16x1 voxels (12 x 12 x 16 = 2,304 tokens at full
#    size), a CLS token and fixed sin-cos positions;
# 3. a stack of **transformer blocks** (attention `q`, `kv`, `proj`; MLP `fc1`, `fc2`): the linear
#    layers where LoRA adapters go;
# 4. a multi-scale fusion of the tokens with the skip maps, and two heads (patch-mean and CLS)
#    whose logits are averaged.
#
# It was pretrained as a **masked autoencoder** (MAE): hide 75% of the tokens, reconstruct them.
# The kit ships a `tutorial` preset (64x64x16 input, 6 blocks of width 96) small enough to
# fine-tune on two CPU cores, and a *phantom FM* pretrained by the kit's own MAE code on a
# phantom "population" cohort. Give `cinema_weights` (CineMA's `cinema.safetensors`, size `base`)
# to use the real pretrained encoder instead.

# %% tags=["parameters"]
# Parameters (papermill injects its own values below this cell)
quick = False         # the tutorial default; True: tiny cohort, few rounds (CI, `make test`)
data_dir = None       # None: the repository's data/ (cache shared by all notebooks)
out_dir = None        # None: the repository's reports/ (figures/, tables/)
seed = 0
model_size = 'tutorial'  # tutorial (CPU) or base (CineMA's size, needs cinema_weights)
cinema_weights = None    # path to CineMA's pretrained/cinema.safetensors (None: phantom FM)
lora_rank = 4            # rank used for the adapter parameter counts
mae_epochs = None        # short MAE demo run (None: 1 in quick mode, 8 otherwise)
mae_subjects = None      # subjects whose ED and ES frames it trains on (None: 8 quick, 16 full)

# %%

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from duallora import paths
from duallora.notebooks import experiments, exploration
from duallora.notebooks.reports import save_table
from duallora.plots import save_figure
from duallora.plots.model import (plot_embeddings, plot_mae_loss, plot_mae_reconstructions,
                                  plot_parameter_counts)

torch.manual_seed(seed)
data_dir, out = paths.notebook_folders(data_dir, out_dir)  # None: inside the repository
ws = experiments.workspace(data_dir, quick, seed)
harmonized = experiments.ensure_cohort(ws)  # built by notebook 01, reused here

# %% [markdown]
# ## Sizes: what full fine-tuning costs, and what LoRA costs
#
# LoRA replaces the update of a frozen weight $W_0 \in \mathbb{R}^{d_{out} \times d_{in}}$ by a
# low-rank product, $W = W_0 + s\,BA$ with $A \in \mathbb{R}^{r \times d_{in}}$,
# $B \in \mathbb{R}^{d_{out} \times r}$, $s = \alpha / r$: only $r(d_{in} + d_{out})$ parameters
# per layer train (and travel). Adapting only the last two blocks shrinks that again.

# %%
table = exploration.parameter_table(rank=lora_rank)
save_table(table, out, "02_parameter_counts")
display(table)
fig = plot_parameter_counts(table, rank=lora_rank)
save_figure(fig, out, "02_parameter_counts")
plt.show()

# %%
model, source = experiments.foundation_model(model_size, cinema_weights, seed=seed)
print(f"foundation model: {source}")
print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {model.n_blocks} blocks")
print(model.encoder.blocks[-1])

# %% [markdown]
# ## Masked-autoencoder reconstructions
#
# A short MAE run (the same code that made the phantom FM, default recipe, for a few epochs on this
# cohort's ED and ES frames) shows the pretraining task: from the quarter of the tokens it sees,
# the encoder must carry enough anatomy for the decoder to paint the rest.

# %%
images, metadata = experiments.cohort_images(harmonized, "tutorial")
epochs = mae_epochs if mae_epochs is not None else (1 if quick else 8)
n_mae = mae_subjects if mae_subjects is not None else (8 if quick else 16)
per_vendor = max(1, n_mae // metadata["vendor"].nunique())  # every vendor in the MAE batch
subset = metadata.groupby("vendor", sort=False).head(per_vendor).index.to_list()
mae, log = experiments.mae_demo(images[subset], "tutorial", epochs=epochs, seed=seed)
fig = plot_mae_loss(log)
save_figure(fig, out, "02_mae_loss")
plt.show()

# %%
show = metadata.groupby("vendor", sort=False).head(1).index.to_list()
original, masked, recon = experiments.mae_reconstructions(mae, images[show], seed=seed)
fig = plot_mae_reconstructions(original, masked, recon,
                               [s.split("/")[-1] for s in metadata.loc[show, "subject_id"]],
                               list(metadata.loc[show, "vendor"]))
save_figure(fig, out, "02_mae_reconstructions")
plt.show()

# %% [markdown]
# ## Where do subjects land in feature space?
#
# `model.embed` gives the pooled feature the heads read. Projected to 2D (PCA, and t-SNE), the
# points coloured by **vendor** show the site shift; coloured by **label** they show how much of
# the disease signal the frozen features already carry. A linear classifier that predicts the
# vendor from the features puts a number on the shift (chance is 1 / number of vendors).

# %%
if model_size == "tutorial":
    features = experiments.cohort_features(model, images)
else:
    big, _ = experiments.cohort_images(harmonized, model_size)
    features = experiments.cohort_features(model, big, batch_size=2)
projections = {"PCA": exploration.project_embeddings(features, "pca", seed),
               "t-SNE": exploration.project_embeddings(features, "tsne", seed)}
fig = plot_embeddings(projections, metadata["vendor"], metadata["label"])
save_figure(fig, out, "02_embeddings")
plt.show()
shift = exploration.vendor_separability(features, metadata["vendor"], seed)
n_vendors = metadata["vendor"].nunique()
print(f"vendor predicted from frozen features: accuracy {shift:.2f} (chance {1 / n_vendors:.2f})")
save_table(metadata[["subject_id", "vendor", "label"]].assign(
    pca_1=projections["PCA"][:, 0], pca_2=projections["PCA"][:, 1],
    tsne_1=projections["t-SNE"][:, 0], tsne_2=projections["t-SNE"][:, 1]),
    out, "02_embeddings")

# %% [markdown]
# Next: fine-tune this frozen model per vendor, pooled, and federated (notebook 03).
