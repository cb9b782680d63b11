# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Welcome to the Med-DualLoRA kit
#
# This kit reproduces **Med-DualLoRA** (*Local Adaptation of Foundation Models for 3D Cardiac MRI*,
# arXiv 2603.10967) as a series of notebooks you can step through or regenerate headlessly.
#
# **The question.** A 3D cine cardiac-MRI foundation model (CineMA: a ConvViT pretrained with a
# masked autoencoder) must learn to tell healthy hearts (NOR) from diseased ones. The data sit in
# hospitals whose scanners come from different vendors (Siemens, Philips, GE, Canon); each vendor is
# one *federated client*, and images never leave their site.
#
# **The method.** Each client trains two LoRA adapters on the same frozen layers,
#
# $$W = W_0 + s_g\,B_g A_g + s_l\,B_l A_l ,$$
#
# the *global* adapter $(A_g, B_g)$ is averaged by the server, the *local* one $(A_l, B_l)$ never
# leaves the site. Only the last two transformer blocks are adapted.

# %% tags=["parameters"]
# Parameters (papermill injects its own values below this cell)
quick = False  # the tutorial default; True: quick mode (CI, `make test`)
data_dir = None       # None: the repository's data/ (cache shared by all notebooks)
out_dir = None        # None: the repository's reports/ (figures/, tables/)
seed = 0

# %% [markdown]
# ## The notebooks, in order
#
# | notebook | what it shows |
# |---|---|
# | `00_welcome` | this page: the kit and how to run it |
# | `01_data_harmonization` | readers for ACDC / M&Ms / M&Ms-2, harmonization, phantom cohort, cine viewer |
# | `02_foundation_model` | the ConvViT, CineMA weights or the phantom foundation model, MAE reconstructions |
# | `03_single_site_vs_federated` | local, centralized and federated PEFT baselines |
# | `04_med_duallora` | Med-DualLoRA against every baseline, adapter norms, ablations |
# | `05_flower_deployment` | the same training over real Flower SuperLink / SuperNodes |
#
# Notebooks appear here as they are added to the kit; the list below is what this checkout holds.

# %%
from duallora.notebooks.runner import list_notebooks

for path in list_notebooks():
    print(path.name)

# %% [markdown]
# ## How to run them
#
# ```bash
# make demo                                  # every notebook at the tutorial default -> reports/
# make test                                  # all tests + every notebook in quick mode
# python -m duallora notebooks --quick --only 01   # one notebook, quick mode
# jupyter lab notebooks/                     # step through them yourself
# papermill notebooks/00_welcome.ipynb reports/00_welcome.ipynb -p quick True  # from the repo
# ```
#
# Executed copies go to `reports/notebooks/`, figures to `reports/figures/`, tables to
# `reports/tables/`. Each notebook's first code cell (tagged `parameters`) holds `quick`,
# `data_dir`, `out_dir` and `seed`; papermill overrides them. `data_dir = None` and
# `out_dir = None` mean the repository's own `data/` and `reports/`, from whichever folder the
# notebook is started.

# %%
import platform

import torch

import duallora
from duallora import paths

data_dir, out = paths.notebook_folders(data_dir, out_dir)  # None: inside the repository
for sub in ("figures", "tables"):
    (out / sub).mkdir(parents=True, exist_ok=True)
print(f"kit {duallora.__version__} | python {platform.python_version()} | torch {torch.__version__}")
print(f"quick={quick} seed={seed} data_dir={data_dir} out_dir={out}")
