"""Regenerate notebooks/00_welcome.ipynb (kept as a script so the notebook stays reviewable)."""

from pathlib import Path

import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
params = code(
    "# Parameters (papermill injects its own values below this cell)\n"
    "quick = True\n"
    "data_dir = '../data'\n"
    "out_dir = '../reports'\n"
    "seed = 0"
)
params.metadata["tags"] = ["parameters"]
nb.cells = [
    md("""# 00 · Welcome to the Med-DualLoRA kit

This kit reproduces **Med-DualLoRA** (*Local Adaptation of Foundation Models for 3D Cardiac MRI*,
arXiv 2603.10967) as a series of notebooks you can step through or regenerate headlessly.

**The question.** A 3D cine cardiac-MRI foundation model (CineMA: a ConvViT pretrained with a
masked autoencoder) must learn to tell healthy hearts (NOR) from diseased ones. The data sit in
hospitals whose scanners come from different vendors (Siemens, Philips, GE, Canon); each vendor is
one *federated client*, and images never leave their site.

**The method.** Each client trains two LoRA adapters on the same frozen layers,

$$W = W_0 + s_g\\,B_g A_g + s_l\\,B_l A_l ,$$

the *global* adapter $(A_g, B_g)$ is averaged by the server, the *local* one $(A_l, B_l)$ never
leaves the site. Only the last two transformer blocks are adapted."""),
    params,
    md("""## The notebooks, in order

| notebook | what it shows |
|---|---|
| `00_welcome` | this page: the kit and how to run it |
| `01_data_harmonization` | readers for ACDC / M&Ms / M&Ms-2, harmonization, phantom cohort, cine viewer |
| `02_foundation_model` | the ConvViT, CineMA weights or the phantom foundation model, MAE reconstructions |
| `03_single_site_vs_federated` | local, centralized and federated PEFT baselines |
| `04_med_duallora` | Med-DualLoRA against every baseline, adapter norms, ablations |
| `05_flower_deployment` | the same training over real Flower SuperLink / SuperNodes |

Notebooks appear here as they are added to the kit; the list below is what this checkout holds."""),
    code("""from pathlib import Path

from duallora.notebooks.runner import list_notebooks

for path in list_notebooks(Path.cwd()):
    print(path.name)"""),
    md("""## How to run them

```bash
make demo                                  # every notebook at the tutorial default -> reports/
make test                                  # all tests + every notebook in quick mode
python -m duallora notebooks --quick --only 01   # one notebook, quick mode
jupyter lab notebooks/                     # step through them yourself
```

Executed copies go to `reports/notebooks/`, figures to `reports/figures/`, tables to
`reports/tables/`. Each notebook's first code cell (tagged `parameters`) holds `quick`,
`data_dir`, `out_dir` and `seed`; papermill overrides them."""),
    code("""import platform

import torch

import duallora

out = Path(out_dir)
for sub in ("figures", "tables"):
    (out / sub).mkdir(parents=True, exist_ok=True)
print(f"kit {duallora.__version__} | python {platform.python_version()} | torch {torch.__version__}")
print(f"quick={quick} seed={seed} data_dir={data_dir} out_dir={out_dir}")"""),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, Path(__file__).resolve().parents[1] / "notebooks" / "00_welcome.ipynb")
