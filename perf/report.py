"""Benchmark results -> targets, a markdown report, and the block between the bench markers.

The measured table sits between two marker lines of docs/PERFORMANCE.md (``make bench``, i.e.
``perf/run.py --update-docs``, replaces it), so it can be replaced without touching the
prose around it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from duallora.errors import KitError

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"

UPLOAD_TARGET = 0.01        # med_duallora uploads <= 1% of fedavg_full (CineMA base)
PREFIX_SPEEDUP_TARGET = 4.0  # cached med_duallora round >= 4x faster (tutorial preset)
MERGED_TARGET = 1.05        # merged-adapter forward within 5% of the plain model
DEMO_TARGET_SECONDS = 30 * 60
FLOWER_FLOOR_TARGET = 1.25  # kit Flower round / trivial Flower app round
IDENTICAL_TOLERANCE = 1e-5  # max |logit difference| still called the same computation


def fmt_bytes(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def fmt_count(value: float | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value >= 1e6:
        return f"{value / 1e6:.3g} M"
    if value >= 1e3:
        return f"{value / 1e3:.3g} k"
    return f"{value:.0f}"


def fmt_timing(timing: dict[str, Any] | None, scale: float = 1.0, unit: str = "s") -> str:
    """``median [q1-q3]`` (or ``value (n=1)``) from a ``Timing.to_dict()``."""
    if not timing:
        return "-"
    median = timing["median"] * scale
    if timing.get("n", 1) < 2:
        return f"{median:.4g} {unit} (n=1)"
    return f"{median:.4g} [{timing['q1'] * scale:.4g}-{timing['q3'] * scale:.4g}] {unit}"


def _row_by(rows: list[dict[str, Any]], strategy: str) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("strategy") == strategy and "error" not in r), None)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the benchmark issue with its measured value and whether it is met
    (``met`` is None when it could not be measured in this run)."""
    targets = []
    base = results.get("strategies", {}).get("base", [])
    dual, full = _row_by(base, "med_duallora"), _row_by(base, "fedavg_full")
    if dual and full and full["upload_bytes"]:
        ratio = dual["upload_bytes"] / full["upload_bytes"]
        targets.append({"target": "med_duallora (last 2 blocks) upload <= 1% of fedavg_full, "
                        "CineMA base", "measured": f"{100 * ratio:.3f}% "
                        f"({fmt_bytes(dual['upload_bytes'])} vs "
                        f"{fmt_bytes(full['upload_bytes'])} per client per round)",
                        "value": ratio, "met": ratio <= UPLOAD_TARGET})
    else:
        targets.append(_unmeasured("med_duallora upload <= 1% of fedavg_full (base)"))
    prefix = results.get("prefix_cache") or {}
    if "speedup" in prefix:
        targets.append({"target": "prefix cache: med_duallora round >= 4x faster (tutorial)",
                        "measured": f"{prefix['speedup']:.2f}x", "value": prefix["speedup"],
                        "met": prefix["speedup"] >= PREFIX_SPEEDUP_TARGET})
        weights = max(prefix["max_abs_diff_global"], prefix["max_abs_diff_private"])
        logits = prefix["max_abs_diff_logits"]
        same = ("bitwise identical weights after the round" if prefix["bitwise_identical"] else
                f"logits differ by <= {logits:.2g} (float rounding: CPU kernels are not "
                f"batch-invariant); trained weights after one round differ by <= {weights:.2g}")
        targets.append({"target": "prefix cache: identical results", "measured": same,
                        "value": logits, "met": logits <= IDENTICAL_TOLERANCE})
    else:
        targets.append(_unmeasured("prefix cache >= 4x faster round (tutorial)"))
    inference = results.get("inference") or {}
    if "merged_over_base" in inference:
        ratio = inference["merged_over_base"]
        targets.append({"target": "merged-adapter inference within 5% of the plain forward",
                        "measured": f"{ratio:.3f}x the plain forward (unmerged: "
                        f"{inference['unmerged_over_base']:.3f}x)", "value": ratio,
                        "met": ratio <= MERGED_TARGET})
    else:
        targets.append(_unmeasured("merged-adapter inference within 5%"))
    demo = (results.get("notebooks") or {}).get("demo")
    if demo and not demo.get("quick") and not demo.get("mixed_modes"):
        seconds = demo["total_seconds"]
        targets.append({"target": "make demo <= 30 min on 2 CPU cores",
                        "measured": f"{seconds / 60:.1f} min ({len(demo['notebooks'])} "
                        "notebooks, papermill durations of the last `make demo`)",
                        "value": seconds, "met": seconds <= DEMO_TARGET_SECONDS})
    else:
        targets.append(_unmeasured("make demo <= 30 min on 2 CPU cores",
                                   "no executed full-mode notebooks in reports/notebooks "
                                   "(run `make demo`, then the benchmark again)"))
    flower = results.get("flower") or {}
    if "ratio_to_floor" in flower:
        ratio = flower["ratio_to_floor"]
        targets.append({"target": "Flower round <= 1.25x a trivial Flower app's (same "
                        "topology and messages; the kit's steady rounds)",
                        "measured": f"{ratio:.2f}x "
                        f"({flower['round_seconds_flower']['median']:.2f} s vs "
                        f"{flower['round_seconds_floor']['median']:.2f} s per round)",
                        "value": ratio, "met": ratio <= FLOWER_FLOOR_TARGET})
    return targets


def _unmeasured(target: str, why: str = "not measured in this run") -> dict[str, Any]:
    return {"target": target, "measured": f"unmeasured: {why}", "value": None, "met": None}


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "unmeasured"}[met]


def _strategy_table(rows: list[dict[str, Any]]) -> list[str]:
    full = _row_by(rows, "fedavg_full")
    lines = ["| strategy | trainable | upload / client | download / client | round traffic "
             "(4 sites, up+down) | upload vs fedavg_full | time | peak RSS |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row.get('strategy', '?')} | failed: {row['error'][:80]} "
                         "| | | | | | |")
            continue
        share = (f"{100 * row['upload_bytes'] / full['upload_bytes']:.2f}%"
                 if full and full["upload_bytes"] and row["upload_bytes"] else "-")
        timed = row.get("timed")
        time_text = "-"
        if timed:
            time_text = (f"{fmt_timing(row.get(f'{timed}_seconds'))} per {timed}"
                         f" ({row['n_train']} subj., batch {row['batch_size']})")
        rss = fmt_bytes(row["peak_rss_bytes"]) if row.get("peak_rss_bytes") else "-"
        if rss != "-" and not row.get("isolated", True):
            rss += " (shared process)"
        traffic = row["upload_bytes_per_round"] + row["download_bytes_per_round"]
        lines.append(f"| {row['strategy']} | {fmt_count(row['trainable_params'])} "
                     f"| {fmt_bytes(row['upload_bytes'])} | {fmt_bytes(row['download_bytes'])} "
                     f"| {fmt_bytes(traffic)} | {share} | {time_text} | {rss} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole report as markdown (also what goes into the README block)."""
    env = results.get("environment", {})
    settings = results.get("settings", {})
    lines = [f"Measured {env.get('date_utc', '?')} on {env.get('processor', '?')} "
             f"({env.get('cpu_count', '?')} cores, torch {env.get('torch', '?')} with "
             f"{env.get('torch_threads', '?')} threads, load average at start "
             f"{env.get('load_average_1_5_15', ['?'])[0]}), "
             f"{'quick smoke run' if settings.get('quick') else 'full run'}. Timings: median "
             "[inter-quartile range] of repeats after a warm-up; the JSON has min/max and n."
             + (f" Note: {settings['note']}." if settings.get("note") else ""), ""]
    lines += ["**Targets**", "", "| target | measured | verdict |", "|---|---|---|"]
    for target in results.get("targets", []):
        lines.append(f"| {target['target']} | {target['measured']} | {_verdict(target['met'])} |")
    for preset, title in (("tutorial", "tutorial preset (64x64x16, CPU), one local epoch"),
                          ("base", "CineMA base (192x192x16, 89.5 M parameters), one training "
                           "step on CPU")):
        rows = results.get("strategies", {}).get(preset)
        if rows:
            blocks = rows[0].get("blocks", "last2")
            lines += ["", f"**Per strategy: {title}, LoRA/blocks `{blocks}`**", ""]
            lines += _strategy_table(rows)
    base_prefix = results.get("base_prefix") or {}
    if base_prefix.get("available"):
        lines += ["", f"CineMA base prefix (stem + blocks 0-{base_prefix['upto_block'] - 1}, "
                  f"computed once per subject): {base_prefix['seconds_per_subject']:.3g} s and "
                  f"{fmt_bytes(base_prefix['bytes_per_subject'])} per subject (n=1 timing)."]
    prefix = results.get("prefix_cache") or {}
    if "speedup" in prefix:
        weights = max(prefix["max_abs_diff_global"], prefix["max_abs_diff_private"])
        same = ("bitwise" if prefix["bitwise_identical"] else
                f"logits {prefix['max_abs_diff_logits']:.2g}, weights {weights:.2g}")
        lines += ["", "**Prefix cache** (med_duallora, one round of "
                  f"{sum(prefix['n_train'].values())} training subjects on "
                  f"{len(prefix['n_train'])} sites, {prefix['local_epochs']} local epochs)", "",
                  "| without cache | with cache | speedup | one-off prefix | max difference |",
                  "|---|---|---|---|---|",
                  f"| {fmt_timing(prefix['round_seconds_full'])} "
                  f"| {fmt_timing(prefix['round_seconds_cached'])} | {prefix['speedup']:.2f}x "
                  f"| {prefix['prefix_compute_seconds']:.3g} s (n=1) | {same} |"]
    inference = results.get("inference") or {}
    if "seconds" in inference:
        sec = inference["seconds"]
        lines += ["", f"**Inference** ({inference['preset']}, batch {inference['batch']}, "
                  "both adapters)", "",
                  "| plain model | adapters unmerged | adapters merged | merged / plain "
                  "| unmerged / plain |", "|---|---|---|---|---|",
                  f"| {fmt_timing(sec['base'], 1e3, 'ms')} "
                  f"| {fmt_timing(sec['unmerged'], 1e3, 'ms')} "
                  f"| {fmt_timing(sec['merged'], 1e3, 'ms')} "
                  f"| {inference['merged_over_base']:.3f} "
                  f"| {inference['unmerged_over_base']:.3f} |"]
    lines += _data_lines(results)
    lines += _flower_lines(results.get("flower") or {})
    return "\n".join(lines) + "\n"


def _data_lines(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    harm = (results.get("data") or {}).get("harmonization") or {}
    if "subjects_per_second" in harm:
        lines += ["", f"**Data**: harmonization {harm['subjects_per_second']:.3g} subjects/s "
                  f"({harm['n_subjects']} phantom subjects, {harm['workers'] or 'all'} workers, "
                  f"{fmt_timing(harm['seconds'])} per run)."]
    notebooks = results.get("notebooks") or {}
    series = notebooks.get("quick_series") or {}
    if "total_seconds" in series:
        lines += ["", f"**Notebooks, quick mode** (fresh folders): {series['total_seconds']:.0f} s "
                  f"for {len(series['notebooks'])} notebooks (n=1)."]
    elif series.get("skipped") or series.get("error"):
        why = series.get("skipped") or f"failed: {series['error'][:200]}"
        lines += ["", f"**Notebooks, quick mode**: not measured ({why})."]
    demo = notebooks.get("demo")
    if demo:
        kind = "quick" if demo.get("quick") else "full"
        lines += [f"Last executed series in reports/notebooks ({kind} mode): "
                  f"{demo['total_seconds'] / 60:.1f} min."]
    return lines


def _flower_lines(flower: dict[str, Any]) -> list[str]:
    if "ratio" in flower:
        lines = ["", f"**Flower localhost vs in-process** ({flower['strategy']}, "
                 f"{flower['rounds']} rounds, same settings): "
                 f"{fmt_timing(flower['round_seconds_flower'])} vs "
                 f"{fmt_timing(flower['round_seconds_inprocess'])} per steady round, "
                 f"ratio {flower['ratio']:.2f}x."]
        first, last = flower.get("first_round_seconds"), flower.get("last_round_seconds")
        if first and last:
            lines[-1] += (f" Round 1 (two messages per site and each site's start-up) "
                          f"{first['flower']:.2f} s vs {first['inprocess']:.2f} s; the last "
                          f"round (its one message per site also carries the final test) "
                          f"{last['flower']:.2f} s vs {last['inprocess']:.2f} s.")
        if "ratio_to_floor" in flower:
            lines += ["", f"**Flower: the kit vs a trivial app** (no torch, the same "
                      f"{flower['n_clients']} SuperNodes, "
                      f"{flower.get('messages_per_site_per_round', 1)} message per site per "
                      f"round): {fmt_timing(flower['round_seconds_flower'])} per steady "
                      f"round vs {fmt_timing(flower['round_seconds_floor'])} per round, "
                      f"ratio {flower['ratio_to_floor']:.2f}x (target <= 1.25x)."]
        return lines
    reason = flower.get("reason", "not measured")
    return ["", f"**Flower localhost vs in-process**: not available ({reason})."]


def update_readme(readme: Path, block: str) -> None:
    """Replace what lies between the bench markers in ``readme`` with ``block``."""
    text = Path(readme).read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise KitError(f"{readme}: no {README_START} ... {README_END} block to update")
    new = text[:start + len(README_START)] + "\n" + block.rstrip() + "\n" + text[end:]
    Path(readme).write_text(new)
