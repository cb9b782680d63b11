"""The benchmark's output: ``benchmark.json`` (every number and its provenance), markdown
tables and figures, under ``reports/benchmark/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARM_LABELS = {
    "med_duallora": "Med-DualLoRA (personalized)",
    "med_duallora_global": "Med-DualLoRA, local adapter off (global)",
    "fedavg_lora": "FedAvg-LoRA",
    "single_site": "single-site LoRA",
    "centralized": "centralized LoRA (pooled data)",
    "fedsa_lora": "FedSA-LoRA",
    "ffa_lora": "FFA-LoRA",
    "fedavg_full": "FedAvg, full blocks",
    "med_duallora_all": "Med-DualLoRA, all blocks",
    "fedper": "FedPer (private head)",
    "fedavg_lora_ft": "FedAvg-LoRA + local fine-tuning",
    "feddpa": "FedDPA",
    "orthogonal_duallora": "orthogonal dual LoRA (FedOPAL-style penalty)",
    "fedalt": "FedALT (rest-of-world LoRA + router)",
    "fedavg_lora_r8": "FedAvg-LoRA, rank 8 (Med-DualLoRA's trainable parameters)",
    "chance": "chance",
    "head_only_probe": "head-only probe (frozen FM, pooled)",
    "raw_pixel_probe": "raw-pixel probe (pooled)",
}


def _f(value: Any, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _interval(entry: dict[str, Any], key: str = "value", sign: bool = False) -> str:
    return f"{_f(entry[key], sign=sign)} [{_f(entry['low'], sign=sign)}, " \
           f"{_f(entry['high'], sign=sign)}]"


def banner(result: dict[str, Any]) -> str:
    """The warning every demo-size table carries, with the primary MDE."""
    primary = result["h1"].get("primary") or {}
    ba = primary.get("balanced_accuracy", {})
    mde = ba.get("mde")
    plan = result["plan"]
    seeds = ", ".join(map(str, plan["train_seeds"]))
    cohorts = ", ".join(map(str, plan["cohort_seeds"]))
    lines = [f"Plan `{plan['name']}`: {result['h1'].get('n_replicates', '?')} replicates "
             f"(cohort seeds {cohorts}; training seeds {seeds}), "
             f"{result['h1'].get('n_test_subjects', '?')} balanced test subjects."]
    if mde is not None:
        lines.append(f"Smallest difference in pooled balanced accuracy this run could detect "
                     f"(alpha 0.05, power 0.8): **{mde:.3f}**. Differences below it are "
                     "*not resolvable at this size*, which is not evidence of no difference.")
    if plan["name"] != "full" and plan["name"] != "paper":
        lines.append("**Demo size**: this plan shows the pipeline and its uncertainty; the "
                     "`full` plan is the one sized to answer the question.")
    return "\n\n".join(lines)


def verdict_line(result: dict[str, Any]) -> str:
    """The H1 verdict as the controls allow it (``controls.verdict``), in bold."""
    verdict = result["h1"].get("verdict")
    if not verdict:
        return ""
    if verdict["status"] == "withheld":
        return f"**{verdict['text']}** The numbers below are shown, not read."
    return f"**{verdict['text']}**"


def headline_table(result: dict[str, Any]) -> str:
    """H1's primary result as a short markdown table (notebook 04 and docs/BENCHMARK.md show it),
    under the verdict line the controls allow."""
    h1 = result["h1"]
    primary = h1.get("primary")
    verdict = verdict_line(result)
    if not primary:
        return "\n\n".join(filter(None, [verdict, "(no primary comparison in this plan)"]))
    ba = primary["balanced_accuracy"]
    rows = ([verdict, ""] if verdict else []) + [
            f"Inference: {ba.get('method') or 'two-level bootstrap'}.", "",
            "| endpoint | Med-DualLoRA - FedAvg-LoRA | 95% CI | p | MDE |",
            "|---|---|---|---|---|"]
    for metric, label in (("balanced_accuracy", "pooled balanced accuracy (primary)"),
                          ("auc", "pooled AUC (descriptive, not tested)")):
        c = primary[metric]
        p = _f(c.get("p", c.get("p_bootstrap"))) if metric == "balanced_accuracy" else "-"
        rows.append(f"| {label} | {_f(c['diff'], sign=True)} | [{_f(c['low'], sign=True)}, "
                    f"{_f(c['high'], sign=True)}] | {p} | {_f(c['mde'])} |")
    fraction = h1.get("headroom_fraction")
    share, reason = (fraction.get("value"), fraction.get("reason")) \
        if isinstance(fraction, dict) else (fraction, None)
    needed = (f"cohort seeds needed to resolve 0.05 at power 0.8 (from the spread of the cohort "
              f"means): {h1['cohorts_needed_for_0.05']}" if "cohorts_needed_for_0.05" in h1
              else "training seeds needed to resolve 0.05 at power 0.8 within this one cohort: "
              f"{h1.get('seeds_needed_for_0.05', '-')}")
    rows.append("")
    rows.append(f"Oracle headroom at this cell: {_f(h1.get('headroom'), sign=True)} BA; share "
                f"closed: {_f(share)}{f' ({reason})' if reason else ''}. {needed.capitalize()}; "
                f"the test-sampling error ({_f(ba.get('sampling_se'))}) does not shrink with "
                "training seeds, only with more test subjects or cohort seeds.")
    return "\n".join(rows)


def arms_table(cell: dict[str, Any], costs: dict[str, float] | None = None) -> str:
    rows = ["| arm | balanced accuracy [95% CI] | seed sd | sampling se | AUC [95% CI] | "
            "sensitivity | specificity | Brier [95% CI] | ECE [95% CI] | MB in total |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, metrics in cell["arms"].items():
        ba = metrics["balanced_accuracy"]
        mb = (costs or {}).get(arm)
        calibration = " | ".join(_interval(metrics[m]) if m in metrics else "-"
                                 for m in ("brier", "ece"))
        rows.append(f"| {ARM_LABELS.get(arm, arm)} | {_interval(ba)} | {_f(ba['seed_sd'])} | "
                    f"{_f(ba['sampling_se'])} | {_interval(metrics['auc'])} | "
                    f"{_f(metrics['sensitivity']['value'])} | "
                    f"{_f(metrics['specificity']['value'])} | {calibration} | {_f(mb, 2)} |")
    return "\n".join(rows)


def spec90_table(cell: dict[str, Any]) -> str:
    """Test sensitivity and specificity at each arm's validation threshold for 90%
    specificity (thresholds fixed on validation, never on test)."""
    rows = ["| arm | test sensitivity [95% CI] | test specificity [95% CI] | validation "
            "thresholds (per replicate) |", "|---|---|---|---|"]
    for arm, metrics in cell["arms"].items():
        if "sensitivity_at_val_spec90" not in metrics:
            continue
        cuts = ", ".join(_f(v) for v in metrics.get("val_threshold_spec90", {}).values())
        rows.append(f"| {ARM_LABELS.get(arm, arm)} | "
                    f"{_interval(metrics['sensitivity_at_val_spec90'])} | "
                    f"{_interval(metrics['specificity_at_val_spec90'])} | {cuts} |")
    if len(rows) == 2:
        return ("(no validation predictions: the runs predate `validation_predictions.csv`; "
                "rerun the benchmark to write them)")
    return "\n".join(rows)


def controls_table(result: dict[str, Any]) -> str:
    """Each control's gate and the comparison reported beside it."""
    entries = result.get("controls") or {}
    if not entries:
        return "(this plan runs no controls: no verdict on H1)"
    rows = ["| control (cell) | gate | difference (BA) [95% CI] | method | passed | beside it "
            "(BA) [95% CI] |", "|---|---|---|---|---|---|"]
    for kind, entry in entries.items():
        cell = entry.get("cell_name") or entry["cell"]
        if entry.get("passed") is None:
            rows.append(f"| {kind} (`{cell}`) | - | - | - | not computed: "
                        f"{entry.get('reason')} | - |")
            continue
        low, high = entry["interval"]
        beside = entry.get("beside")
        beside_text = (f"{beside['comparison']}: {_f(beside['estimate'], sign=True)} "
                       f"[{_f(beside['interval'][0], sign=True)}, "
                       f"{_f(beside['interval'][1], sign=True)}]" if beside else "-")
        rows.append(f"| {kind} (`{cell}`) | {entry['comparison']} | "
                    f"{_f(entry['estimate'], sign=True)} [{_f(low, sign=True)}, "
                    f"{_f(high, sign=True)}] | {entry['method']} | "
                    f"**{'yes' if entry['passed'] else 'NO'}** | {beside_text} |")
    rules = [f"- {kind}: {entry['rule']}." for kind, entry in entries.items()]
    return "\n".join(rows) + "\n\nRules (fixed before any result):\n" + "\n".join(rules)


def lovo_table(lovo: dict[str, Any]) -> str:
    """The global model on a vendor it never trained on, beside the same method's global
    model trained with it (same subjects)."""
    rows = ["| held out | method | vendor by cohort seed | BA [95% CI] | AUC [95% CI] | "
            "trained with it: BA [95% CI] | difference (BA) [95% CI] |",
            "|---|---|---|---|---|---|---|"]
    for kind in ("canon", "outlier"):
        for method, entry in (lovo or {}).get(kind, {}).items():
            if "held_out" not in entry:
                continue
            vendors = ", ".join(f"{seed}: {v}" for seed, v in entry["held_out_vendor"].items())
            trained = entry.get("trained_with_vendor")
            diff = (entry.get("difference") or {}).get("balanced_accuracy")
            rows.append(f"| {kind} | {ARM_LABELS.get(method, method)} | {vendors} | "
                        f"{_interval(entry['held_out']['balanced_accuracy'])} | "
                        f"{_interval(entry['held_out']['auc'])} | "
                        f"{_interval(trained['balanced_accuracy']) if trained else '-'} | "
                        f"{_interval(diff, 'diff', True) if diff else '-'} |")
    if len(rows) == 2:
        return "(this plan holds no vendor out)"
    return "\n".join(rows) + f"\n\nHeld-out vendors: {lovo.get('rule', '')}."


def vendors_table(cell: dict[str, Any]) -> str:
    """Per-vendor balanced accuracy of every arm [95% CI], and its worst vendor."""
    table = cell.get("vendors") or {}
    if not table:
        return "(no per-vendor results at this cell)"
    vendors = sorted(next(iter(table.values()))["per_vendor"])
    rows = ["| arm | " + " | ".join(f"{v} BA" for v in vendors) + " | worst vendor (BA) |",
            "|---|" + "---|" * (len(vendors) + 1)]
    for arm, entry in table.items():
        cells = [_interval(entry["per_vendor"][v]["balanced_accuracy"]) for v in vendors]
        worst = entry.get("worst_vendor")
        rows.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " | "
                    + (f"{worst['vendor']}: {_f(worst['value'])}" if worst else "-") + " |")
    return "\n".join(rows)


def secondary_table(h1: dict[str, Any]) -> str:
    rows = ["| Med-DualLoRA minus | BA difference [95% CI] | p (Holm) | MDE | AUC "
            "difference [95% CI] | reading |", "|---|---|---|---|---|---|"]
    for arm, value in h1["secondary"].items():
        ba, auc = value["balanced_accuracy"], value["auc"]
        holm = ba.get("p_holm")
        reading = ("resolved" if holm is not None and holm < 0.05 else
                   "not resolvable at this size")
        rows.append(f"| {ARM_LABELS.get(arm, arm)} | {_interval(ba, 'diff', True)} | "
                    f"{_f(holm)} | {_f(ba['mde'])} | "
                    f"{_interval(auc, 'diff', True)} | {reading} |")
    return "\n".join(rows)


def dose_table(h1: dict[str, Any]) -> str:
    rows = ["| shift cell | Med-DualLoRA - FedAvg-LoRA (BA) [95% CI] | MDE | note |",
            "|---|---|---|---|"]
    for row in h1["dose_response"]:
        note = "negative control" + (f": {row['flag']}" if row["flag"] else "") \
            if row["negative_control"] else ""
        rows.append(f"| {row['cell']} | {_interval(row, 'diff', True)} | {_f(row['mde'])} | "
                    f"{note} |")
    return "\n".join(rows)


def h2_text(h2: dict[str, Any]) -> str:
    if "skipped" in h2:
        return h2["skipped"]
    tost = h2["tost"]
    if "uninformative" in tost:
        lines = [f"Equivalence (TOST) not tested, it would be uninformative: "
                 f"{tost['uninformative']}."]
    else:
        verdict = ("equivalent within the margin" if tost["equivalent"] else
                   "equivalence not shown at this size")
        lines = [f"Two blocks - all blocks (BA): {_f(tost['diff'], sign=True)}, 90% CI "
                 f"[{_f(tost['low90'], sign=True)}, {_f(tost['high90'], sign=True)}], margin "
                 f"+-{h2['margin']:.2f}, TOST p = {_f(tost['p_tost'])}: **{verdict}**."]
    gap = h2.get("gap")
    if gap:
        value = gap.get("value")
        lines.append(f"Share of the (all blocks - head-only probe) gap recovered by two blocks: "
                     f"{_f(value)}" + (f" ({gap['reason']})" if gap.get("reason") else "") + ".")
    return "\n\n".join(lines)


def cross_site_table(matrix: dict[str, Any], run: str = "med_duallora",
                     subjects: dict[str, int] | None = None) -> str:
    table = matrix.get(run)
    if not table:
        return "(no cross-site predictions)"
    smallest = min((subjects or {}).values(), default=0)
    targets = sorted({t for row in table.values() for t in row}, key=lambda t: (t == "unseen", t))
    rows = ["| model \\ tested on | " + " | ".join(targets) + " |",
            "|---|" + "---|" * len(targets)]
    for owner in sorted(table, key=lambda o: (o == "global", o)):
        rows.append(f"| {owner} | " + " | ".join(_f(table[owner].get(t)) for t in targets)
                    + " |")
    if smallest:
        # balanced accuracy of n subjects has a standard error of at most 0.5 / sqrt(n)
        se = 0.5 / smallest ** 0.5
        rows.append("")
        mde = (1.96 + 0.84) * 2 ** 0.5 * se  # two independent cells, alpha 0.05, power 0.8
        rows.append(f"Point estimates (mean over replicates). Each column holds at least "
                    f"{smallest} test subjects: test-sampling standard error up to {se:.3f} "
                    f"per cell, so two cells differing by less than about {mde:.2f} are not "
                    "resolvable at this size.")
    return "\n".join(rows)


def write_report(result: dict[str, Any], out: Path) -> Path:
    """``benchmark.json``, ``benchmark.md`` and the figures into ``out``; returns the md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    primary_key = result["plan"]["primary_cell_key"]
    cell = result["cells"].get(primary_key)
    costs = {row["arm"]: row["mb_total"] for row in result["h3"]["rows"]}
    parts = [f"# Benchmark: plan `{result['plan']['name']}`", banner(result),
             "## H1: a private local adapter under shift (primary endpoint)",
             headline_table(result),
             "### Controls (gates on the H1 verdict)", controls_table(result)]
    if cell:
        parts += ["### Every arm at the primary cell " + f"(`{cell['shift']}`)",
                  arms_table(cell, costs),
                  "### Sensitivity and specificity at 90% specificity (threshold fixed on "
                  "each arm's validation predictions)", spec90_table(cell),
                  "### Per vendor at the primary cell (each vendor's own test subjects)",
                  vendors_table(cell), "### Secondary comparisons (Holm-adjusted family)",
                  secondary_table(result["h1"])]
    parts += ["### Dose-response over the annotation-shift strength", dose_table(result["h1"]),
              "## Leave one vendor out (the global model on a vendor it never trained on)",
              lovo_table(result.get("lovo") or {}),
              "## H2: two blocks vs all blocks", h2_text(result["h2"]),
              "## Cross-site matrix (balanced accuracy; rows: whose model, columns: tested on)",
              cross_site_table(result["cross_site"],
                               subjects=result.get("cross_site_subjects")),
              "## Per-vendor differences (exploratory, unadjusted)",
              "\n".join(f"- {vendor}: {value['balanced_accuracy']['text']}" for vendor, value
                        in result["h1"]["per_vendor_exploratory"].items()),
              "## Provenance", f"commit `{result['provenance']['commit']}`"
              f"{' (uncommitted changes)' if result['provenance'].get('dirty') else ''}, command "
              f"`{result['provenance']['command']}`, {result['provenance']['seconds']:.0f} s."]
    md = out / "benchmark.md"
    md.write_text("\n\n".join(parts) + "\n")
    (out / "headline.md").write_text(banner(result) + "\n\n" + headline_table(result) + "\n")
    write_figures(result, out / "figures")
    return md


def write_figures(result: dict[str, Any], folder: Path) -> None:
    """Dose-response, accuracy against megabytes (Pareto) and the cross-site heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    dose = result["h1"]["dose_response"]
    if dose:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        x = [row["label_strength"] for row in dose]
        y = [row["diff"] for row in dose]
        err = [[row["diff"] - row["low"] for row in dose], [row["high"] - row["diff"]
                                                             for row in dose]]
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("annotation-shift strength")
        ax.set_ylabel("BA: Med-DualLoRA - FedAvg-LoRA")
        fig.tight_layout()
        fig.savefig(folder / "dose_response.png", dpi=120)
        plt.close(fig)
    rows = result["h3"]["rows"]
    if rows:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for row in rows:
            mb = max(row["mb_total"], 1e-3)
            ax.errorbar([mb], [row["balanced_accuracy"]],
                        yerr=[[row["balanced_accuracy"] - row["low"]],
                              [row["high"] - row["balanced_accuracy"]]], fmt="o", capsize=3)
            ax.annotate(ARM_LABELS.get(row["arm"], row["arm"]), (mb, row["balanced_accuracy"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("MB exchanged in total (log; 1e-3 = nothing)")
        ax.set_ylabel("pooled balanced accuracy")
        fig.tight_layout()
        fig.savefig(folder / "pareto.png", dpi=120)
        plt.close(fig)
    table = result["cross_site"].get("med_duallora")
    if table:
        owners = sorted(table, key=lambda o: (o == "global", o))
        targets = sorted({t for row in table.values() for t in row},
                         key=lambda t: (t == "unseen", t))
        values = np.array([[table[o].get(t, np.nan) for t in targets] for o in owners])
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
        image = ax.imshow(values, vmin=0.4, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(targets)), targets, rotation=30, fontsize=7)
        ax.set_yticks(range(len(owners)), owners, fontsize=7)
        for i in range(len(owners)):
            for j in range(len(targets)):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white")
        ax.set_xlabel("tested on")
        ax.set_ylabel("model of")
        fig.colorbar(image, ax=ax, label="balanced accuracy")
        fig.tight_layout()
        fig.savefig(folder / "cross_site.png", dpi=120)
        plt.close(fig)
