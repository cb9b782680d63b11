# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Real multi-site runs with Flower
#
# Notebooks 03 and 04 simulate the hospitals inside one Python process. Here the same training
# runs the way real sites would run it: with [Flower](https://flower.ai) (flwr 1.42, Message API),
# as **separate operating-system processes that talk over the network**:
#
# - a **SuperLink** (the coordinating centre) runs the kit's `ServerApp`;
# - one **SuperNode per vendor** (the hospitals) runs the kit's `ClientApp` on its own data;
# - `flwr run` packages the app folder `duallora/flower/app` and submits the run.
#
# Everything listens on `127.0.0.1` here (`--insecure` is only acceptable on loopback); the last
# section shows what changes for three real hospitals. The `ServerApp` and `ClientApp` reuse the
# federated core unchanged (strategy objects, model, data loading, metrics, run directory), so a
# Flower run must reproduce the in-process run of the same seed. We check that, time both, and
# measure what differential privacy on the global update costs.

# %% tags=["parameters"]
# Parameters (papermill injects its own values below this cell)
quick = False         # the tutorial default; True: tiny cohort, few rounds (CI, `make test`)
data_dir = None       # None: the repository's data/ (cache shared by all notebooks)
out_dir = None        # None: the repository's reports/ (figures/, tables/)
seed = 0
n_clients = 4               # SuperNodes (one per vendor)
flower_rounds = 2           # rounds of the Flower runs: the quick default (this notebook shows
                            # the deployment; notebook 04 gives the eight-round result)
dp_noise_multiplier = 0.1   # central DP: noise std is z times clipping norm times largest weight
dp_clipping_norm = 0.1      # L2 bound of one site's update of the shared tensors per round

# %%

import pandas as pd
from IPython.display import display

from duallora import paths
from duallora.notebooks import experiments
from duallora.notebooks.reports import save_table
from duallora.plots import save_figure
from duallora.plots.results import (plot_privacy_tradeoff, plot_round_times,
                                    plot_run_metric_bars)
from duallora.results import compare

data_dir, out = paths.notebook_folders(data_dir, out_dir)  # None: inside the repository
ws = experiments.workspace(data_dir, quick, seed)
harmonized = experiments.ensure_cohort(ws)  # built by notebook 01, reused here
# notebook 04's Med-DualLoRA settings
overrides = {k: v for k, v in experiments.strategy_specs(["med_duallora"])["med_duallora"].items()
             if k != "strategy"}
# Every Flower round pays process and polling costs the in-process loop does not, so the
# demo runs fewer rounds than notebook 04; the in-process reference uses the same number.
if not quick:
    overrides["rounds"] = flower_rounds
else:  # CI: two sites (each more only adds processes; tests/test_flower_run.py runs four)
    n_clients = min(n_clients, 2)
# the vendors that n_clients sites hold (all four by default), for the in-process reference too
overrides["data"] = str(experiments.flower_cohort(ws, n_clients))
config = experiments.train_config(ws, "med_duallora", **overrides)
print(f"cohort: {config.data}")
print(f"{n_clients} sites; strategy {config.strategy}, {config.rounds} rounds, fm={config.fm}, "
      f"seed={config.seed}")

# %% [markdown]
# ## 1 · The reference: the in-process loop
#
# Notebook 04's configuration with `flower_rounds` rounds, on the vendors the Flower sites hold.

# %%
in_process = experiments.ensure_run(ws, f"med_duallora_{n_clients}sites_r{config.rounds}",
                                    "med_duallora", progress=False, **overrides)
print(in_process)

# %% [markdown]
# ## 2 · The same run over Flower
#
# `flower_local` (also `python -m duallora flower-local --clients 4 --data ... --out ...`) starts a
# SuperLink and one SuperNode per vendor with free loopback ports and a private `FLWR_HOME` each,
# submits the app with `flwr run ... --stream`, waits, and stops every process it started, also on
# errors and Ctrl-C. Each SuperNode gets a **node config**:
#
# ```
# client-name = "Philips"                 # which vendor this site is
# data-dir    = ".../sites/Philips/data"  # the site's own harmonized data
# state-dir   = ".../sites/Philips/state" # node-local: local adapters, event log
# cache-dir   = "../data/.../prefix_cache" # optional; here the workspace's prefix cache, which
#                                          # the local sites share (entries are keyed by their
#                                          # own images): notebook 04's runs already hold them
# ```
#
# Flower starts a fresh `ClientApp` process for every message, so the kit's ClientApp is a thin
# relay (no PyTorch): it forwards each message over a unix socket in `state-dir` to the site's
# long-lived worker (`duallora site-worker`, started by `flower-local` beside each SuperNode),
# which keeps the model, the data and the local adapter in memory and on disk in `state-dir`
# (a restarted worker or SuperNode resumes from there).
#
# A SuperLink serves many runs at once, so the sites are started once and both of this
# notebook's Flower runs train side by side: the plain one, and the one with differential
# privacy that section 4 reads. Each site worker answers the two runs' messages one at a time,
# so each run's numbers are those it would get alone. Each site gets one message per round:
# round r's validation travels with round r + 1's training, the last validation with the
# final test (each site applies the selection rule to its own validation), and round 0's
# head statistics with the site's hello (the message that tells the server which site a
# node is).

# %%
flower_runs = experiments.ensure_flower_runs({
    ws.runs / "flower_med_duallora": experiments.FlowerJob(config),
    ws.runs / "flower_med_duallora_dp": experiments.FlowerJob(
        config, dp_noise_multiplier=dp_noise_multiplier, dp_clipping_norm=dp_clipping_norm),
}, n_clients)
flower_run, dp_run = flower_runs.values()
print((flower_run / "flower" / "server.log").read_text())

# %% [markdown]
# ### Does it reproduce the in-process run?
#
# Same seed, same settings: the global adapter, every metric, every test probability and the
# communication log should match (differences at float precision at most).

# %%
comparison = compare.compare_runs(flower_run, in_process)
save_table(comparison, out, "05_flower_vs_inprocess")
display(comparison)

# %% [markdown]
# ### What reached the server, and what stayed on each site
#
# `flower/wire.jsonl` lists every name in every reply the server received: the global adapter and
# the head, metrics and predictions; nothing named `local`. The local adapters sit in each site's
# `state-dir`, one file per round (the final test uses each site's best validation round).

# %%
import json

wire = [json.loads(line) for line in (flower_run / "flower" / "wire.jsonl").read_text().splitlines()]
arrays = sorted({n.split("/", 1)[1] for r in wire if r["type"] == "train" for n in r["names"]
                 if n.startswith("arrays/")})
print(f"{len(wire)} replies; uploaded tensors: {len(arrays)}, e.g. {arrays[:2]}")
print("local-adapter tensors that reached the server:",
      [n for r in wire for n in r["names"] if ".lora_A.local." in n or ".lora_B.local." in n])
kept = experiments.flower_site_files(flower_run)
display(kept.groupby("site").agg(files=("file", "count"), bytes=("bytes", "sum")))

# %% [markdown]
# ## 3 · Time per round
#
# The in-process loop runs every client one after the other inside one Python process. Flower
# adds real costs: a new (thin) `ClientApp` process per message, the relay to the site worker,
# SuperNodes polling the SuperLink, and serialization; the validation of round r travels with
# the training of round r+1, so a round is one message per site. On a laptop the sites also
# compete for the same cores; on real sites they train in parallel on their own machines.

# %%
times = compare.round_times({"in-process": in_process, "Flower": flower_run})
save_table(times, out, "05_round_times")
display(times.groupby("run")["seconds"].mean().rename("mean seconds per round"))
fig = plot_round_times(times)
save_figure(fig, out, "05_round_times")

# %% [markdown]
# ## 4 · Differential privacy on the global update
#
# With `dp-noise-multiplier` $z > 0$, every site clips its update of the shared tensors to L2 norm
# $C$ (Flower's `fixedclipping_mod` on the `ClientApp`), and the server adds Gaussian noise with
# standard deviation $z \cdot C \cdot \max_k w_k$ to the weighted mean ($w_k$: site $k$'s share of
# the training subjects). Only the global adapter and the head are noised; the local adapter
# never leaves its site, so Med-DualLoRA keeps part of its personalization intact. The price is
# accuracy (the DP run, `dp_run`, was trained in section 2 on the same sites):

# %%
runs = {"in-process": in_process, "Flower": flower_run,
        f"Flower + DP (z={dp_noise_multiplier}, C={dp_clipping_norm})": dp_run}
cost = compare.test_metrics(runs)
save_table(cost, out, "05_dp_cost")
display(cost.pivot(index="metric", columns="run", values="value"))
fig = plot_run_metric_bars(cost, "Test metrics (macro over vendors)")
save_figure(fig, out, "05_dp_cost")

# %% [markdown]
# What that noise buys: the **privacy budget** $(\varepsilon, \delta)$ of the shared updates,
# from Flower's own RDP accountant (`duallora.flower.server.privacy`; $\delta$ = `dp-delta`, default
# $10^{-5}$). Every round releases one noisy aggregate, so $\varepsilon$ grows with the rounds;
# a run without DP has no guarantee at all ($\varepsilon = \infty$). The run writes its budget
# per round into `metrics.csv` (split `privacy`).

# %%
points, budgets = compare.privacy_tradeoff(runs)
save_table(points, out, "05_privacy_tradeoff")
display(budgets)
fig = plot_privacy_tradeoff(points, budgets)
save_figure(fig, out, "05_privacy_tradeoff")

# %% [markdown]
# In quick mode the cohort is tiny and training is two short rounds, and the demo runs only
# `flower_rounds` rounds, so these numbers are noisy and below notebook 04's eight-round result;
# the point is the mechanics. Note the scale: the noise is added to every shared coordinate
# (about $10^4$ of them), so its norm grows like $\sqrt{d}$ while one round's averaged update is
# small. Noise multipliers that give meaningful privacy guarantees ($z \gtrsim 1$) need many
# more sites than four (the noise is divided among them); here even $z = 0.1$ costs accuracy.
#
# ## 5 · Three hospitals, for real
#
# 1. **Same software everywhere.** The coordinator and each hospital install the same kit version
#    (`pip install med-duallora-kit==X`); the Flower app only names
#    `duallora.flower.server.server_app:app` and `duallora.flower.site.client_app:app`, so no code is
#    shipped or installed during a run (`--disable-runtime-dependency-installation`).
# 2. **Data stay home.** Each hospital harmonizes its own scans
#    (`python -m data_prep harmonize ... --out /data/harmonized`).
# 3. **TLS.** The coordinator creates a CA and a server certificate for the SuperLink's host name
#    and starts `flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem
#    --ssl-keyfile server.key --enable-supernode-auth`. Each hospital receives `ca.crt`.
# 4. **Who may join.** Each hospital makes a key pair (`ssh-keygen -t ecdsa -b 384 -N "" -f
#    site_key`) and sends `site_key.pub`; the coordinator registers it
#    (`flwr supernode register site_key.pub <connection>`).
# 5. **Start the SuperNode** with its node config:
#    `flower-supernode --superlink link.example.org:8000 --root-certificates ca.crt
#    --auth-supernode-private-key site_key --node-config 'client-name="GE"
#    data-dir="/data/harmonized" state-dir="/data/duallora"'`.
# 6. **Run.** The coordinator submits `flwr run duallora/flower/app prod --stream --run-config
#    'out-dir="/srv/runs/dual" num-clients=3 rounds=8'`. The run directory (global adapter,
#    metrics, predictions, communication log) is written on the server; each hospital keeps its
#    data, its local adapter of every round, its final local adapter (`final/peft/local`), its
#    prefix cache and its event log in `state-dir`.
