# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Data: three datasets, four vendors, one harmonized cohort
#
# Med-DualLoRA fine-tunes on **ACDC**, **M&Ms** and **M&Ms-2**. Each scanner vendor is one federated
# client: **Siemens** (ACDC + M&Ms A + M&Ms-2), **Philips**, **GE** and **Canon** (M&Ms only). The
# real data cannot be downloaded here, so the kit writes a *phantom cohort* in exactly the raw
# layouts of the three datasets (same folders, tables, 4D cine files, ED/ES conventions and label
# codes) and runs the very same readers and harmonization on it. Pass `acdc_root`, `mnms_root`
# or `mnms2_root` to run this notebook on the real downloads instead.
#
# Harmonization (`python -m data_prep harmonize`) turns every subject into what CineMA expects:
#
# 1. read ED and ES (ACDC: 1-based frame numbers; M&Ms: 0-based indices into the 4D cine;
#    M&Ms-2: separate ED/ES files), unify the mask labels to 1 LV, 2 MYO, 3 RV;
# 2. resample to **1 x 1 x 10 mm**, crop **192 x 192** around the left ventricle, pad/crop to
#    **16 slices**;
# 3. clip intensities and scale them to **[0, 1]**;
# 4. label: 0 = NOR (healthy), 1 = any disease; split each vendor, label-stratified, into
#    train / val / test (the official splits leave Canon without training subjects).

# %% tags=["parameters"]
# Parameters (papermill injects its own values below this cell)
quick = False         # the tutorial default; True: tiny cohort, few rounds (CI, `make test`)
data_dir = None       # None: the repository's data/ (cache shared by all notebooks)
out_dir = None        # None: the repository's reports/ (figures/, tables/)
seed = 0
cohort_scale = None    # phantom cohort size as a fraction of the real datasets (None: mode default)
acdc_root = None       # real ACDC database/ folder (None: use the phantom cohort)
mnms_root = None       # real M&Ms OpenDataset/ folder
mnms2_root = None      # real M&Ms-2 folder (holds dataset_information.csv)
viewer_subjects = 3    # subjects per vendor offered in the cine viewer

# %%
from functools import partial

import matplotlib.pyplot as plt
from IPython.display import display

from duallora import paths
from duallora.data import load_pair, load_real_sample, read_metadata
from duallora.notebooks import experiments, exploration
from duallora.notebooks.reports import save_table
from duallora.plots import VENDORS, save_figure
from duallora.plots.data import (REAL_SAMPLES_SOURCE, plot_cohort_counts,
                                 plot_intensity_distributions, plot_phantoms_vs_real)
from duallora.plots.viewer import (CineViewer, load_cine_subject, static_cine_figure,
                                   widgets_can_render)

data_dir, out = paths.notebook_folders(data_dir, out_dir)  # None: inside the repository
ws = experiments.workspace(data_dir, quick, seed)
real_roots = dict(acdc=acdc_root, mnms=mnms_root, mnms2=mnms2_root)
print(f"workspace: {ws.root} (quick={quick})")

# %% [markdown]
# ## Build (or reuse) the cohort
#
# The first call writes the phantom cohort and harmonizes it; later notebooks (and later runs)
# find it in `data_dir` and reuse it. `skipped.csv` lists every subject that could not be
# harmonized, with the reason: bad input never aborts the run and never disappears silently.

# %%
harmonized = experiments.ensure_cohort(ws, cohort_scale, **real_roots)
roots = experiments.dataset_roots(ws, **real_roots)
metadata = read_metadata(harmonized)
skipped = (harmonized / "skipped.csv").read_text().strip().splitlines()[1:]
print(f"{len(metadata)} subjects harmonized into {harmonized}; {len(skipped)} skipped")
metadata.head()

# %% [markdown]
# ## Who is in the cohort?
#
# Per vendor: healthy (NOR) and diseased subjects in each federated split. NOR is the minority
# class almost everywhere, and Canon is the smallest site: the two facts that make balanced
# accuracy and specificity the metrics to watch.

# %%
counts = exploration.cohort_table(metadata)
save_table(counts, out, "01_cohort_counts", index=True)
display(counts)
fig = plot_cohort_counts(metadata)
save_figure(fig, out, "01_cohort_counts")
plt.show()

# %% [markdown]
# ## Centres and shifts: the v2 phantom generator
#
# The cohort above comes from the original generator (**v1**), which the tutorial's numbers are
# pinned to. There, the heart and its label do not depend on the vendor: a negative control with
# nothing for a per-vendor adapter to gain. The default generator of `python -m data_prep
# phantoms` (**v2**, see `docs/PHANTOMS.md`) gives every vendor 1-3 **centres**, each with its
# own protocol, population and diagnostic rule, drawn with the cohort seed from literature
# ranges, plus one **unseen centre** for testing the global model. Three shift families, each
# with a strength in [0, 1] (`--shift acq=1,mix=1,label=1` by default, all 0 = no shift):
#
# 1. **acquisition**: slice thickness and gaps, breath-hold misalignment, coverage, 3 T (SNR, B1
#    shading, SSFP bands), zero-filled interpolation, phase-encode ghosts, 20-30 frames;
# 2. **case mix**: each centre's pathology mix, share of mild disease, body size, age, sex;
# 3. **annotation policy**: each centre labels from the measurements with its own thresholds and
#    reader noise: the one shift that changes P(label | image, centre).

# %%
from data_prep.phantoms import default_shifts
from data_prep.phantoms.centres import centre_table, draw_centres
from data_prep.phantoms.figures import (acquisition_examples, annotation_table,
                                        case_mix_table, plot_shift_families)
from data_prep.phantoms.headroom import format_report, headroom_report

shifts = default_shifts()
centres = centre_table(draw_centres(shifts, seed))
columns = ["centre", "vendor", "dataset", "size", "nor_share", "acq.slice_thickness",
           "acq.slice_gap", "acq.share_3t", "acq.frames", "mix.mild_share", "label.lvef_cut",
           "label.wall_max", "label.rvedvi_max"]
save_table(centres, out, "01_centres")
display(centres[columns])

# %% [markdown]
# What each family does. Top two rows: one subject's end-diastolic scan under the reference
# protocol, then with one acquisition effect at a time at the top of its range, then under a
# centre's full protocol (slice and a cut along the long axis, where thick slices, gaps and
# breath-hold misalignment show). Bottom left: case mix, the latent LVEF per centre. Bottom right:
# annotation policy, the share of the *same* subjects that each centre labels as diseased,
# against their true LVEF.

# %%
examples = acquisition_examples(seed)
mix = case_mix_table(seed, n=150 if quick else 400)
annotation = annotation_table(seed, n=800 if quick else 3000)
fig = plot_shift_families(examples, mix, annotation)
save_figure(fig, out, "01_shift_families")
plt.show()

# %% [markdown]
# **Oracle headroom**: an oracle that sees each subject's true measurements, trained per vendor
# or pooled over vendors. The per-vendor gain is the most a private local adapter could add; at
# annotation strength 0 it is zero (the tested gate: <= 0.005).

# %%
report = headroom_report(shifts, seed, n_train=1000 if quick else 4000,
                         n_test=500 if quick else 2000)
print(format_report(report))

# %% [markdown]
# ## Intensities before and after harmonization
#
# Each vendor's scanner writes intensities on its own scale (and with its own bias field and
# noise). After harmonization every volume lies in [0, 1], but the *shapes* of the distributions
# still differ by vendor: this residual **vendor shift** is what the federated clients must cope
# with, and what a local adapter can absorb.

# %%
records = experiments.subject_records(roots)
samples = experiments.intensity_samples(metadata, harmonized, records,
                                        per_vendor=2 if quick else 4, seed=seed)
summary = (samples.groupby(["stage", "vendor"])["intensity"]
           .describe(percentiles=[0.05, 0.5, 0.95]).reset_index())
save_table(summary, out, "01_intensity_summary")
fig = plot_intensity_distributions(samples)
save_figure(fig, out, "01_intensity_distributions")
plt.show()

# %% [markdown]
# ## Phantoms beside real images
#
# Top: one harmonized phantom per vendor (ED, middle slice). Bottom: the real preprocessed
# samples from CineMA's examples (`../shared/data/real-samples`, when present), padded to 16
# slices exactly as the harmonized volumes are. Same grid, same intensity scale.

# %%
phantom_panels = []
for vendor in [v for v in VENDORS if v in set(metadata["vendor"])]:
    row = metadata[metadata["vendor"] == vendor].iloc[0]
    pair = load_pair(harmonized, row, image_size=(192, 192, 16), crop_size=192)
    phantom_panels.append((f"{vendor}: {row['subject_id']}", vendor, pair[0]))
real_panels = []
real_dir = paths.real_samples_dir()
if real_dir is not None:
    for folder in sorted(p for p in real_dir.iterdir() if p.is_dir()):
        real_panels.append((f"real {folder.name}", load_real_sample(folder)[0].numpy()))
else:
    print("No real samples: ../shared/data/real-samples is absent, so the bottom row says so. "
          f"{REAL_SAMPLES_SOURCE}.")
fig = plot_phantoms_vs_real(phantom_panels, real_panels)
save_figure(fig, out, "01_phantoms_vs_real")
plt.show()

# %% [markdown]
# ## Cine viewer
#
# Pick a vendor and a subject, move through slices (base to apex) and cardiac frames; the
# timeline marks **ED** and **ES**, and the toggle overlays the segmentation (LV, MYO, RV) on
# those two frames. The viewer needs a live Jupyter front end; run headless (papermill, CI) the
# notebook shows the static version below instead, with the same information.

# %%
catalogue = {}
for vendor in [v for v in VENDORS if v in set(metadata["vendor"])]:
    ids = metadata.loc[metadata["vendor"] == vendor, "subject_id"].head(viewer_subjects)
    catalogue[vendor] = {sid: partial(load_cine_subject, records[sid])
                         for sid in ids if sid in records and records[sid].cine}
catalogue = {vendor: subjects for vendor, subjects in catalogue.items() if subjects}
if widgets_can_render():
    display(CineViewer(catalogue))
else:
    print("no widget front end (headless run): static view below")
subjects = [next(iter(subjects.values()))() for subjects in catalogue.values()]
fig = static_cine_figure(subjects, n_slices=3)
save_figure(fig, out, "01_cine_viewer")
plt.show()

# %% [markdown]
# ## What we have
#
# A harmonized cohort in `data_dir` (`metadata.csv` + 192x192x16 volumes at 1x1x10 mm) that
# notebooks 02-05 reuse. Next: the foundation model that turns these volumes into features.
