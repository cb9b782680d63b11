# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Alone, pooled, or federated? The baselines
#
# Each vendor is a hospital that keeps its images. We fine-tune the frozen foundation model of
# notebook 02 for NOR-vs-disease in six ways (all adapt the **last two transformer blocks** and
# the head):
#
# | strategy | who trains what | what travels |
# |---|---|---|
# | `single_site` | each vendor its own LoRA + head, alone | nothing |
# | `centralized` | one LoRA + head on the pooled data of all vendors | the data itself (not private: an upper reference) |
# | `fedavg_full` | every weight of the two blocks + head | full block weights, averaged |
# | `fedavg_lora` (FedIT) | LoRA $A$, $B$ + head | $A$, $B$, head, averaged |
# | `ffa_lora` | $B$ + head, $A$ frozen at a shared random init | $B$, head |
# | `fedsa_lora` | $A$, $B$ + head | only $A$ (shared); $B$ and head stay on the site |
#
# The server combines uploads with the sample-weighted mean (FedAvg):
# $\theta^{t+1} = \sum_k \frac{n_k}{\sum_j n_j}\,\theta_k^{t}$.
# Every client keeps the round whose model scored best on its validation split; we report the
# test split per vendor with 95% bootstrap confidence intervals. The disease class is the
# positive one: **sensitivity** = diseased found, **specificity** = healthy recognised,
# **balanced accuracy** = their mean.

# %% tags=["parameters"]
# Parameters (papermill injects its own values below this cell)
quick = False         # the tutorial default; True: tiny cohort, few rounds (CI, `make test`)
data_dir = None       # None: the repository's data/ (cache shared by all notebooks)
out_dir = None        # None: the repository's reports/ (figures/, tables/)
seed = 0
rounds = None         # federated rounds (None: the kit default, 2 in quick mode)
blocks = 'last2'      # adapted transformer blocks: last2, all, or indices like 4,5
lora_rank = 4
strategies = ['single_site', 'centralized', 'fedavg_full', 'fedavg_lora', 'ffa_lora', 'fedsa_lora']

# %%

import matplotlib.pyplot as plt
from IPython.display import display

from duallora import paths
from duallora.notebooks import experiments
from duallora.notebooks.reports import save_table
from duallora.plots import save_figure
from duallora.plots.results import (plot_communication, plot_learning_curves,
                                    plot_vendor_metrics)
from duallora.results import run_reader, tables

data_dir, out = paths.notebook_folders(data_dir, out_dir)  # None: inside the repository
ws = experiments.workspace(data_dir, quick, seed)
harmonized = experiments.ensure_cohort(ws)  # notebook 01's cohort, reused
print("foundation model:",
      experiments.fm_description(experiments.train_config(ws, "fedavg_lora")))

# %% [markdown]
# ## The federated core, by hand
#
# Behind `experiments.ensure_runs` below is `duallora.federated`: a **strategy** is a small
# declarative object that says which parameter groups a client trains and which of them it
# uploads; everything else it trains stays on the site. Every round, the driver sends the global
# payload to each site, calls `train_client` there, and combines the uploads with the strategy's
# own `aggregate` (the sample-weighted mean above).

# %%
from duallora.federated.strategies import get_strategy



def groups(names):
    """Group names; fusion and stem exist only under the frames options (notebook 04)."""
    return ", ".join(sorted(names - {"fusion", "stem"})) or "-"


for name in [*strategies, "med_duallora"]:
    plan = get_strategy(name)
    print(f"{name:12s} trains {groups(plan.trainable):42s} shares {groups(plan.shared):28s}"
          f" keeps {groups(plan.private)}")

# %% [markdown]
# One round of **Med-DualLoRA** (notebook 04's method: a shared global adapter plus a private
# local one) for two vendors, with the same functions the driver calls. Each client builds the
# same model from the same seed, so all start from the server's initial global payload.

# %%
from collections import Counter

from duallora.federated.client import train_client
from duallora.federated.client_model import build_client_model
from duallora.federated.head_norm import setup_head_norm
from duallora.federated.prepare import prepare_cohort

spec = experiments.strategy_specs(["med_duallora"], blocks=blocks, rank=lora_rank)["med_duallora"]
core_config = experiments.train_config(ws, **spec)  # notebook 04's settings
server_model = build_client_model(core_config)  # the server's copy: the initial global payload
core_strategy = server_model.strategy
core_cohort = prepare_cohort(core_config, server_model)  # each vendor's splits (prefix-cached)
setup_head_norm(core_config, core_strategy, server_model, core_cohort)  # round 0: pooled stats
pair = sorted(core_cohort.train_clients, key=lambda v: -core_cohort.train_clients[v].n_train())[:2]
clients = {vendor: build_client_model(core_config, core_strategy) for vendor in pair}
model = clients[pair[0]]
for kind, names in (("shared", model.shared_names), ("private", model.private_names)):
    print(f"{kind:7s} {len(names):3d} tensors, {model.count(names):8,d} values: "
          f"{dict(Counter(model.groups[n] for n in names))}")
print("for example, private:", model.private_names[0])

# %%
global_init = server_model.shared_payload()
updates = {vendor: train_client(clients[vendor], global_init, None,
                                core_cohort.train_clients[vendor], core_config, round_idx=1)
           for vendor in pair}
for vendor, update in updates.items():
    leaked = set(update.upload) & set(clients[vendor].private_names)
    assert not leaked, f"{vendor} would upload private tensors: {sorted(leaked)[:3]}"
    print(f"{vendor:8s} {update.n_examples:3d} training subjects, loss {update.metrics['loss']:.3f}"
          f": uploads {len(update.upload)} tensors, keeps {len(update.private)} at home")
new_global = core_strategy.aggregate([(u.upload, u.n_examples) for u in updates.values()])
assert not any(".local." in key for key in new_global)
print(f"the server averaged {len(new_global)} tensors; no local-adapter key in any upload")

# %% [markdown]
# ## Train (or reuse) the six runs
#
# Each run is a `duallora train` run directory (`config.json`, `metrics.csv`, `predictions.csv`,
# `comm.jsonl`, checkpoints) under `data_dir`. A finished run with the same configuration is
# reused, an interrupted one resumed; the frozen prefix (stem + first blocks) is computed once
# and cached for every strategy.

# %%
specs = experiments.strategy_specs(strategies, rounds=rounds, blocks=blocks, rank=lora_rank)
run_dirs = experiments.ensure_runs(ws, specs)
runs = run_reader.load_runs(run_dirs)
for name, path in run_dirs.items():
    print(f"{name:12s} -> {path}")

# %% [markdown]
# ## Per-vendor results
#
# Dots: test-set value; bars: 95% bootstrap interval (subjects resampled within each vendor).
# `macro` is the mean over vendors, so the small Canon site counts as much as Siemens.

# %%
table = tables.metric_table(runs, "test")
save_table(table, out, "03_test_metrics_long")
wide = tables.wide_metric_table(table)
save_table(wide, out, "03_test_metrics")
display(wide)
fig = plot_vendor_metrics(table, title="Baselines: test metrics per vendor (95% bootstrap CI)")
save_figure(fig, out, "03_vendor_metrics")
plt.show()

# %% [markdown]
# ## Learning curves
#
# Validation balanced accuracy of every client's model after each round (for `centralized`, the
# one pooled model). Federated clients move together; `single_site` clients each follow their own
# small dataset.

# %%
curves = tables.learning_curves(runs)
save_table(curves, out, "03_learning_curves")
fig = plot_learning_curves(curves)
save_figure(fig, out, "03_learning_curves")
plt.show()

# %% [markdown]
# ## Communication
#
# Bytes are measured on the serialized messages (`comm.jsonl`), down (server to client) and up.
# Full fine-tuning of two blocks sends every weight of them; LoRA sends two thin matrices per
# layer; FFA-LoRA and FedSA-LoRA halve that again. `single_site` and `centralized` have no server.
# Round 0 is the same small message for every federated strategy: each client's feature count,
# sum and sum of squares, pooled by the server into the standardization in front of the heads
# (see the README, "Training").

# %%
costs = tables.cost_table(runs)
save_table(costs, out, "03_communication")
display(costs)
per_round = tables.comm_per_round(runs)
fig = plot_communication(costs, per_round)
save_figure(fig, out, "03_communication")
plt.show()

# %% [markdown]
# Next (notebook 04): give every site a second, private adapter: Med-DualLoRA.
