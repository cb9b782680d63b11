# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Med-DualLoRA: a global adapter for the federation, a local one for each site
#
# Every adapted linear layer of client $k$ carries **two** LoRA adapters on the same frozen
# weight:
#
# $$W_k = W_0 + s_g\,B_g A_g + s_l\,B_l^{(k)} A_l^{(k)}, \qquad s = \alpha / r .$$
#
# - the **global** adapter $(A_g, B_g)$ and the classification head are uploaded after local
#   training and averaged by the server, $\;A_g \leftarrow \sum_k \tfrac{n_k}{n} A_g^{(k)},\;
#   B_g \leftarrow \sum_k \tfrac{n_k}{n} B_g^{(k)}$;
# - the **local** adapter $(A_l^{(k)}, B_l^{(k)})$ never leaves site $k$: it absorbs the site's
#   own shift (scanner, protocol, population).
#
# Both train together on the client's data; only the global half costs communication. At a new
# site (or to share one model), the global adapter alone ($W_0 + s_g B_g A_g$) is the
# federation's model. As in the paper, only the **last two transformer blocks** are adapted.

# %% tags=["parameters"]
# Parameters (papermill injects its own values below this cell)
quick = False         # the tutorial default; True: tiny cohort, few rounds (CI, `make test`)
data_dir = None       # None: the repository's data/ (cache shared by all notebooks)
out_dir = None        # None: the repository's reports/ (figures/, tables/)
seed = 0
rounds = None          # federated rounds (None: the kit default, 2 in quick mode)
lora_rank = 4          # rank of both adapters (alpha is 2 x rank)
holdout_vendor = 'Canon'  # never trained on, only tested with the global model ('' to skip)
ablation_ranks = None  # other ranks to try (None: [2] in quick mode, [2, 8] otherwise)
n_boot = None          # bootstrap / permutation replicates (None: 200 quick, 1000 otherwise)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import display

from duallora import paths
from duallora.notebooks import experiments
from duallora.notebooks.reports import save_table
from duallora.plots import save_figure
from duallora.plots.adapters import (plot_local_share, plot_norm_heatmaps,
                                     plot_norms_over_rounds)
from duallora.plots.results import (plot_learning_curves, plot_metric_bars,
                                    plot_significance, plot_vendor_metrics)
from duallora.results import run_reader, tables
from duallora.results.headline import headline_table

data_dir, out = paths.notebook_folders(data_dir, out_dir)  # None: inside the repository
ws = experiments.workspace(data_dir, quick, seed)
harmonized = experiments.ensure_cohort(ws)
ranks = ablation_ranks if ablation_ranks is not None else ([2] if quick else [2, 8])
replicates = n_boot if n_boot is not None else (200 if quick else 1000)
print("foundation model:",
      experiments.fm_description(experiments.train_config(ws, "med_duallora")))

# %% [markdown]
# ## One round of Med-DualLoRA, by hand
#
# What every training run below does each round, written out with the kit's federated core
# (`duallora.federated`): two vendors' clients build the same model from the same seed, train
# one local round on their own data, upload only the shared part, and the server averages the
# uploads with the strategy's own `aggregate`.

# %%
from collections import Counter

from duallora.federated.client import train_client
from duallora.federated.client_model import build_client_model
from duallora.federated.head_norm import setup_head_norm
from duallora.federated.prepare import prepare_cohort

spec = experiments.strategy_specs(["med_duallora"], rank=lora_rank)["med_duallora"]
core_config = experiments.train_config(ws, **spec)  # the settings of the run below
server_model = build_client_model(core_config)  # the server's copy: the initial global payload
core_strategy = server_model.strategy
core_cohort = prepare_cohort(core_config, server_model)  # each vendor's splits (prefix-cached)
setup_head_norm(core_config, core_strategy, server_model, core_cohort)  # round 0: pooled stats
pair = sorted(core_cohort.train_clients, key=lambda v: -core_cohort.train_clients[v].n_train())[:2]
clients = {vendor: build_client_model(core_config, core_strategy) for vendor in pair}
model = clients[pair[0]]
print(f"{core_strategy.name}: {core_strategy.description}")
for kind, names in (("shared", model.shared_names), ("private", model.private_names)):
    print(f"{kind:7s} {len(names):3d} tensors, {model.count(names):8,d} values: "
          f"{dict(Counter(model.groups[n] for n in names))}")
print("shared, e.g. ", next(n for n in model.shared_names if ".global." in n))
print("private, e.g.", model.private_names[0])

# %%
global_init = server_model.shared_payload()
updates = {vendor: train_client(clients[vendor], global_init, None,
                                core_cohort.train_clients[vendor], core_config, round_idx=1)
           for vendor in pair}
for vendor, update in updates.items():
    leaked = set(update.upload) & set(clients[vendor].private_names)
    assert not leaked, f"{vendor} would upload private tensors: {sorted(leaked)[:3]}"
    assert not any(".local." in key for key in update.upload)
    print(f"{vendor:8s} {update.n_examples:3d} training subjects, loss {update.metrics['loss']:.3f}"
          f": uploads {len(update.upload)} tensors, keeps {len(update.private)} at home")
new_global = core_strategy.aggregate([(u.upload, u.n_examples) for u in updates.values()])
print(f"no private key in either upload; the server averaged {len(new_global)} tensors")
key = next(k for k in new_global if ".lora_B.global." in k)
weights = {vendor: update.n_examples for vendor, update in updates.items()}
by_hand = sum(weights[v] * updates[v].upload[key].double() for v in pair) / sum(weights.values())
print(f"{key}\n  aggregate vs sum_k n_k B_k / n by hand: max |difference| = "
      f"{(new_global[key].double() - by_hand).abs().max():.1e}")

# %% [markdown]
# Each site now loads the averaged global part over its own private part: the shared tensors
# are identical on both sites, the local adapters are not (each absorbed its own site's data).

# %%
for vendor in pair:
    clients[vendor].set_state(new_global, updates[vendor].private)
shared_gap = max((clients[pair[0]].params[n] - clients[pair[1]].params[n]).abs().max().item()
                 for n in model.shared_names)
local_gap = max((clients[pair[0]].params[n] - clients[pair[1]].params[n]).abs().max().item()
                for n in model.private_names)
print(f"{pair[0]} vs {pair[1]}: largest difference in shared tensors {shared_gap:.1e}, "
      f"in local-adapter tensors {local_gap:.1e}")
assert shared_gap == 0.0 and local_gap > 0.0

# %% [markdown]
# ## The benchmark: the paper's three questions, declared before the results
#
# The confirmatory answer comes from `duallora benchmark` (docs/BENCHMARK.md), on phantom-v2
# cohorts whose centres differ in protocol, population and annotation policy, each with a
# balanced test cohort and an unseen centre. Declared before any result:
#
# - **H1 primary endpoint**: pooled balanced accuracy, Med-DualLoRA (personalized: each vendor
#   scored by its own model) **minus FedAvg-LoRA** (the same bytes per round), paired (same
#   test subjects, same seed), at the realistic annotation shift (strength 1). The same
#   difference at strength 0 is the **negative control**: there the oracle headroom is ~0, so a
#   significant gain would be a bug or noise.
# - Secondary comparisons (Holm-adjusted family): the same training with the local adapter
#   off, `single_site`, `centralized` (and, in the full plan, every other baseline).
# - **H2**: two blocks vs all blocks, TOST with margin 0.05 balanced accuracy (full plan).
# - **H3**: bytes from the wire logs, against accuracy.
# - Every number carries a 95% two-level bootstrap interval (seeds, then subjects) and the
#   **minimum detectable difference**; below it a result is "not resolvable at this size".
#
# At the tutorial default this cell runs the `demo` plan (3 training seeds, one small cohort
# per shift strength); in quick mode the `test` plan (2 seeds, tiny cohorts, the tests' model)
# with the demo plan's arms.
# Finished runs are reused.

# %%
from IPython.display import Markdown

benchmark = experiments.ensure_benchmark(ws, out)
display(Markdown(Path(benchmark["markdown"]).read_text()))

# %% [markdown]
# The sections below train the **v1** demo cohort (no centre effects: nothing for a
# per-vendor model to gain) and explore it per vendor, with uncorrected tests: read them as
# exploration, and the benchmark above as the answer.

# %% [markdown]
# ## Train Med-DualLoRA (and reuse notebook 03's baselines)
#
# The baselines are looked up in `data_dir` with exactly notebook 03's settings; any that are
# missing are trained here, so this notebook also runs on its own. Two more personalization
# methods train beside them with the same settings (docs/STRATEGIES.md): **orthogonal dual
# LoRA** (Med-DualLoRA plus a penalty on the overlap of the two adapters' input subspaces) and
# **FedALT** (each site's own LoRA is uploaded but never reset; the server sends each site the
# mean of the *other* sites' adapters, frozen, and a per-layer router mixes the two).

# %%
main_specs = experiments.strategy_specs(["med_duallora", *experiments.BASELINES,
                                         *experiments.DUAL_VARIANTS],
                                        rounds=rounds, rank=lora_rank)
main_specs_dirs = experiments.ensure_runs(ws, main_specs)
runs = run_reader.load_runs(main_specs_dirs)

# %% [markdown]
# ### Does the orthogonality penalty separate the adapters?
#
# The overlap of each site's global and local input subspaces at the end of training,
# normalized ||A_g A_l^T||_F (0: orthogonal, 1: one shared direction; the same quantity the
# penalty acts on), for Med-DualLoRA and orthogonal dual LoRA on the same data and seed.

# %%
import pandas as pd

from duallora.federated.orthogonal import overlap
from duallora.base.rundir import RunDir


def site_overlaps(run_dir):
    state = RunDir(run_dir).load_checkpoint()
    return {site: overlap({**state["global"], **private})
            for site, private in sorted(state["private"].items())}


overlaps = pd.DataFrame({name: site_overlaps(main_specs_dirs[name])
                         for name in ("med_duallora", "orthogonal_duallora")})
save_table(overlaps, out, "04_subspace_overlap")
display(overlaps.round(4))

# %% [markdown]
# ## Med-DualLoRA against every baseline, per vendor

# %%
table = tables.metric_table(runs, "test")
save_table(tables.wide_metric_table(table), out, "04_test_metrics")
save_table(table, out, "04_test_metrics_long")
fig = plot_vendor_metrics(table, title="Med-DualLoRA and baselines: test metrics per vendor "
                          "(95% bootstrap CI)")
save_figure(fig, out, "04_vendor_metrics")
plt.show()
headline = headline_table(runs)
save_table(headline, out, "headline")
display(headline)

# %% [markdown]
# ## Are the differences significant?
#
# Both models are scored on the **same** test subjects, so we test the *difference* directly:
# a paired bootstrap (resample subjects, recompute both metrics, 95% interval of
# Med-DualLoRA minus baseline, two-sided p) and a paired permutation test (swap the two models'
# outputs per subject at random). With a few test subjects per vendor, wide intervals are the
# honest answer.

# %%
significance = tables.significance_table(runs, "med_duallora", n_boot=replicates, seed=seed)
save_table(significance, out, "04_significance")
display(significance.round(3))
fig = plot_significance(significance)
save_figure(fig, out, "04_significance")
plt.show()

# %% [markdown]
# ## The global model, and a vendor the federation never saw
#
# `test_global` evaluates the averaged global adapter alone (local adapters switched off) on
# every vendor. The held-out runs leave one vendor out of training altogether and test the
# global model there: what a new hospital would get on day one.

# %%
ablations = experiments.ablation_specs(ranks=ranks, holdout_vendor=holdout_vendor,
                                       holdout_baselines=() if quick else ("fedavg_lora",),
                                       rounds=rounds, rank=lora_rank)
ablation_runs = run_reader.load_runs(experiments.ensure_runs(ws, ablations))
global_table = tables.metric_table({k: v for k, v in runs.items()
                                       if k in ("med_duallora", "fedavg_lora", "fedavg_full",
                                                "ffa_lora")}, "test_global")
save_table(global_table, out, "04_global_model_metrics")
fig = plot_vendor_metrics(global_table, title="Global model only (local parts off): test "
                          "metrics per vendor")
save_figure(fig, out, "04_global_model_metrics")
plt.show()
if holdout_vendor:
    held = {k: v for k, v in ablation_runs.items() if "_holdout_" in k}
    holdout_table = tables.metric_table(held, "holdout")
    save_table(holdout_table, out, "04_holdout_vendor")
    fig = plot_metric_bars(holdout_table, scope=holdout_vendor,
                           title=f"Held-out vendor {holdout_vendor}: global model, balanced "
                                 "accuracy (95% CI)")
    save_figure(fig, out, "04_holdout_vendor")
    plt.show()

# %% [markdown]
# ## Adapter norms: where, and how much, each adapter changes the model
#
# For every adapted layer we measure $\lVert s\,BA \rVert_F$, the size of the weight change.
# The global adapter is one per federation; each vendor's local adapter is its own. Large local
# norms at a vendor mean the site needed its own correction.

# %%
norms = runs["med_duallora"].norms
save_table(norms, out, "04_adapter_norms")
fig = plot_norm_heatmaps(norms)
save_figure(fig, out, "04_adapter_norms_modules")
plt.show()
totals = tables.norm_totals(norms)
fig = plot_norms_over_rounds(totals)
save_figure(fig, out, "04_adapter_norms_rounds")
plt.show()
fig = plot_local_share(norms)
save_figure(fig, out, "04_adapter_local_share")
plt.show()

# %% [markdown]
# Explore one site at a time: pick a vendor, an adapted block (or all of them) and a round.
# The explorer needs a live Jupyter front end; run headless, the notebook shows its default
# view (the first vendor, every block, the last round) as a still figure instead.

# %%
from duallora.plots.norm_explorer import (AdapterNormExplorer, explorer_choices,
                                          norm_explorer_figure)
from duallora.plots.viewer import widgets_can_render

if widgets_can_render():
    display(AdapterNormExplorer(norms))
else:
    print("no widget front end (headless run): the explorer's default view")
    fig = norm_explorer_figure(norms, explorer_choices(norms)[0][0])
    save_figure(fig, out, "04_adapter_norm_explorer")
    plt.show()

# %% [markdown]
# ## Ablations
#
# - **2 blocks vs all blocks**: does adapting every block help, for its extra cost?
# - **rank**: the capacity of each adapter;
# - **shared vs local head**: keep the classification head private as well.

# %%
variants = {"med_duallora": runs["med_duallora"],
            **{k: v for k, v in ablation_runs.items() if "_holdout_" not in k}}
ablation_table = tables.metric_table(variants, "test")
ablation_costs = tables.cost_table(variants)
save_table(ablation_table, out, "04_ablations")
save_table(ablation_costs, out, "04_ablation_costs")
display(headline_table(variants))
fig = plot_metric_bars(ablation_table, scope="macro",
                       title="Ablations: macro test balanced accuracy (95% CI)",
                       order=list(variants))
save_figure(fig, out, "04_ablations")
plt.show()
curves = tables.learning_curves(variants)
fig = plot_learning_curves(curves)
save_figure(fig, out, "04_ablation_learning_curves")
plt.show()

# %% [markdown]
# ## Frame handling: can the adapters see ejection?
#
# CineMA's classifier feeds ED and ES as two channels of a first conv initialised with the
# one-frame MAE kernel repeated (`--frames repeat`): a frozen stem sees $w \cdot ED + w \cdot ES$,
# so no adapter after it can see the change between the frames, i.e. ejection. `per-frame` runs the
# frozen one-frame prefix on each frame and fuses the two streams with a small trained term that
# starts as their mean; `trainable-stem` trains the first conv (at a tenth of the learning rate).
# One seed on the demo cohort: an exploratory look; `tools/frames_protocol_study.py` measures
# 3 seeds by a rule declared beforehand. A `trainable-stem` run cannot use the prefix cache
# (the stem changes) and costs about four ordinary runs, so the tutorial trains it for
# Med-DualLoRA only (the study has all three strategies), and quick mode skips it.

# %%
frame_plan = {"per-frame": experiments.FRAME_STRATEGIES}
if not quick:
    frame_plan["trainable-stem"] = ("med_duallora",)
frame_specs = {}
for mode, names in frame_plan.items():
    frame_specs.update(experiments.frame_specs([mode], names, rounds=rounds, rank=lora_rank))
frame_runs = run_reader.load_runs(experiments.ensure_runs(ws, frame_specs))
frame_variants = {}
for name in experiments.FRAME_STRATEGIES:
    frame_variants[f"{name}_repeat"] = runs[name]
    for mode, names in frame_plan.items():
        if name in names:
            frame_variants[f"{name}_{mode}"] = frame_runs[f"{name}_{mode}"]
frame_table = tables.metric_table(frame_variants, "test")
save_table(frame_table, out, "04_frame_handling")
display(headline_table(frame_variants))
fig = plot_metric_bars(frame_table, scope="pooled", metric="auc",
                       title="Frame handling: pooled test AUC (95% CI)",
                       order=list(frame_variants))
save_figure(fig, out, "04_frame_handling")
plt.show()

# %% [markdown]
# The headline table (`tables/headline.csv`) and every figure above are linked from
# `reports/README.md` after `make demo`. Notebook 05 runs the same training over Flower.
