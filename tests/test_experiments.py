"""Build-or-reuse logic, adapter norms, result tables and the reports README."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from duallora.base.config import TrainConfig
from duallora.federated.norm_logger import NormLogger, adapter_scales, state_norms
from duallora.notebooks import experiments, exploration
from duallora.notebooks.reports import markdown_table, save_table, write_reports_readme
from duallora.results import run_reader, tables
from duallora.results.adapter_norms import lora_norms
from duallora.results.headline import headline_table

KEY = "base_model.model.encoder.blocks.{b}.{m}.lora_{f}.{a}.weight"


def _pair(rank: int, d_in: int, d_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rank, d_in, generator=gen), torch.randn(d_out, rank, generator=gen)


def test_lora_norm_is_frobenius_of_scaled_product() -> None:
    a, b = _pair(2, 6, 5, 0)
    payload = {KEY.format(b=4, m="attn.q", f="A", a="global"): a,
               KEY.format(b=4, m="attn.q", f="B", a="global"): b,
               KEY.format(b=5, m="mlp.fc1", f="A", a="global"): a}  # no B: not a full pair
    rows = lora_norms(payload, {"global": 0.5})
    assert len(rows) == 1
    expected = float(torch.linalg.matrix_norm(0.5 * (b.double() @ a.double())))
    assert rows[0] == {"adapter": "global", "block": 4, "module": "attn.q",
                       "norm": pytest.approx(expected)}


def test_state_norms_split_server_and_clients() -> None:
    """FedSA keeps B private and shares A: a client's norm combines both, the server has none;
    Med-DualLoRA clients report only their local adapter."""
    a, b = _pair(2, 4, 4, 1)
    a2, b2 = _pair(2, 4, 4, 2)
    fedsa = {"global": {KEY.format(b=1, m="attn.q", f="A", a="global"): a},
             "private": {"GE": {KEY.format(b=1, m="attn.q", f="B", a="global"): b}}}
    rows = state_norms(fedsa, {"global": 1.0}, round_idx=3)
    assert [(r["owner"], r["round"]) for r in rows] == [("GE", 3)]
    assert rows[0]["norm"] == pytest.approx(float(torch.linalg.matrix_norm(b @ a)), rel=1e-6)
    dual = {"global": {KEY.format(b=1, m="attn.q", f="A", a="global"): a,
                       KEY.format(b=1, m="attn.q", f="B", a="global"): b},
            "private": {"Canon": {KEY.format(b=1, m="attn.q", f="A", a="local"): a2,
                                  KEY.format(b=1, m="attn.q", f="B", a="local"): b2}}}
    rows = state_norms(dual, {"global": 2.0, "local": 1.0}, round_idx=1)
    owners = {(r["owner"], r["adapter"]) for r in rows}
    assert owners == {("server", "global"), ("Canon", "local")}


def test_adapter_scales_follow_the_strategy() -> None:
    config = TrainConfig(strategy="med_duallora", rank=4, alpha=8, local_rank=2, local_alpha=8)
    assert adapter_scales(config) == {"global": 2.0, "local": 4.0}
    config = TrainConfig(strategy="local", rank=4, alpha=8, local_rank=2, local_alpha=8)
    assert adapter_scales(config)["local"] == 2.0


def test_norm_logger_rewrites_rounds_on_resume(tmp_path: Path) -> None:
    a, b = _pair(2, 4, 4, 3)
    (tmp_path / "checkpoints").mkdir()
    state = {"global": {KEY.format(b=0, m="attn.q", f="A", a="global"): a,
                        KEY.format(b=0, m="attn.q", f="B", a="global"): b}, "private": {}}
    torch.save(state, tmp_path / "checkpoints" / "last.pt")
    logger = NormLogger(tmp_path, TrainConfig(strategy="fedavg_lora"))
    logger(1)
    logger(2)
    logger(2)  # a resumed run replays round 2: no duplicate rows
    frame = pd.read_csv(tmp_path / "adapter_norms.csv")
    assert frame["round"].tolist() == [1, 2]


def test_workspace_separates_modes(tmp_path: Path) -> None:
    quick = experiments.workspace(tmp_path, quick=True)
    full = experiments.workspace(tmp_path, quick=False)
    assert quick.root != full.root and quick.root.is_dir() and full.root.is_dir()
    assert quick.default_scale < full.default_scale


def test_cohort_is_reused_and_rebuilt_on_new_settings(tmp_path: Path, monkeypatch) -> None:
    calls: list[dict] = []

    def fake_phantoms(out, scale, seed, generator):
        assert generator == "v1"  # the demo stays on v1 until the benchmark issue
        Path(out).mkdir(parents=True, exist_ok=True)
        calls.append({"phantoms": scale})

    def fake_harmonize(*, out, seed, **roots):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metadata.csv").write_text("subject_id\n")
        calls.append({"harmonize": sorted(roots)})

    monkeypatch.setattr("data_prep.phantoms.write_phantom_cohort", fake_phantoms)
    monkeypatch.setattr("data_prep.harmonize.harmonize_datasets", fake_harmonize)
    ws = experiments.workspace(tmp_path, quick=True)
    first = experiments.ensure_cohort(ws)
    assert experiments.ensure_cohort(ws) == first
    assert calls == [{"phantoms": experiments.QUICK_SCALE},
                     {"harmonize": ["acdc", "mnms", "mnms2"]}]
    experiments.ensure_cohort(ws, scale=0.05)  # another scale: both steps redone
    assert len(calls) == 4 and calls[2] == {"phantoms": 0.05}
    experiments.ensure_cohort(ws)  # no scale asked (notebooks 02-05): the built one is reused
    assert len(calls) == 4


def test_runs_are_reused_only_with_the_same_config(tmp_path: Path, monkeypatch) -> None:
    trained: list[str] = []

    def fake_training(config, out, *, resume, progress, after_round):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(config.to_json())
        (out / "metrics.csv").write_text("round,client,split,metric,value\n")
        trained.append(f"{config.strategy}:{config.rank}:{resume}")
        return out

    monkeypatch.setattr("duallora.federated.loop.run_training", fake_training)
    ws = experiments.workspace(tmp_path, quick=True)
    experiments.ensure_run(ws, "a", "fedavg_lora", rank=4)
    experiments.ensure_run(ws, "a", "fedavg_lora", rank=4)
    assert trained == ["fedavg_lora:4:False"]
    experiments.ensure_run(ws, "a", "fedavg_lora", rank=8)
    assert trained[-1] == "fedavg_lora:8:False"
    # an interrupted run (config written, no kit marker) with the same settings is resumed
    (ws.runs / "a" / experiments.RUN_MARKER).unlink()
    experiments.ensure_run(ws, "a", "fedavg_lora", rank=8)
    assert trained[-1] == "fedavg_lora:8:True"


def test_specs_share_settings_between_notebooks() -> None:
    specs = experiments.strategy_specs(["fedavg_lora", "med_duallora"], rounds=3, rank=8)
    assert specs["fedavg_lora"]["rank"] == 8 and specs["med_duallora"]["rounds"] == 3
    ablations = experiments.ablation_specs(ranks=[2, 4], holdout_vendor="Canon", rank=4)
    assert "med_duallora_r4" not in ablations and ablations["med_duallora_r2"]["rank"] == 2
    assert ablations["med_duallora_holdout_Canon"]["holdout_vendor"] == "Canon"
    assert ablations["med_duallora_all_blocks"]["blocks"] == "all"
    assert ablations["med_duallora_private_head"]["head"] == "private"


# -- summaries -------------------------------------------------------------------------------
def _metadata() -> pd.DataFrame:
    rows = []
    for vendor, n in (("GE", 4), ("Siemens", 6)):
        for i in range(n):
            rows.append({"subject_id": f"{vendor}{i}", "vendor": vendor, "label": i % 2,
                         "split": ("train", "val", "test")[i % 3]})
    return pd.DataFrame(rows)


def test_cohort_table_counts_and_orders_vendors() -> None:
    table = exploration.cohort_table(_metadata())
    assert list(table.index) == ["Siemens", "GE", "all"]
    assert table.loc["Siemens", "total"] == 6 and table.loc["all", "total"] == 10
    assert table.loc["GE", "NOR"] == 2 and table.loc["GE", "NOR train"] == 1


def test_parameter_table_matches_real_models() -> None:
    from duallora.base.config import LORA_TARGETS
    from duallora.federated.adapters import AdapterSpec, attach_adapters
    from duallora.model import build_convvit

    table = exploration.parameter_table(["tutorial"], rank=4).iloc[0]
    model = build_convvit("tutorial", seed=0)
    assert table["params"] == sum(p.numel() for p in model.parameters())
    peft = attach_adapters(model, [AdapterSpec("global", 4, 8.0)], [4, 5], LORA_TARGETS)
    lora = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
    assert table["lora_r4_last2"] == lora


def test_projection_and_vendor_separability() -> None:
    rng = np.random.default_rng(0)
    vendors = np.repeat(["Siemens", "GE"], 20)
    features = rng.normal(size=(40, 8))
    features[vendors == "GE", 0] += 6.0  # a strong vendor shift on one channel
    for method in ("pca", "tsne"):
        assert exploration.project_embeddings(features, method).shape == (40, 2)
    assert exploration.vendor_separability(features, vendors) > 0.9
    assert exploration.vendor_separability(rng.normal(size=(40, 8)), vendors) < 0.8
    with pytest.raises(ValueError):
        exploration.project_embeddings(features, "umap")


def _fake_run(name: str, probs: np.ndarray, labels: np.ndarray, vendors: np.ndarray,
              bytes_up: float):
    from duallora.results.evaluation import prediction_rows, summary_rows

    preds = pd.DataFrame(prediction_rows([f"s{i}" for i in range(len(labels))], "x", "test",
                                         labels, probs))
    preds["client"] = vendors
    metrics = pd.DataFrame(summary_rows(preds, 2, 50, 0))
    cost = pd.DataFrame([{"round": 2, "client": "server", "split": "cost", "metric": m,
                          "value": v} for m, v in (("bytes_up_total", bytes_up),
                                                   ("bytes_down_total", bytes_up),
                                                   ("trainable_params", 10))])
    return run_reader.RunResults(name, Path(name), {"rounds": 2},
                                  pd.concat([metrics, cost], ignore_index=True), preds,
                                  pd.DataFrame(), pd.DataFrame())


def test_result_tables_from_run_files() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    vendors = np.array(["GE"] * 4 + ["Canon"] * 4)
    perfect = labels * 0.8 + 0.1
    always_sick = np.full(8, 0.9)
    runs = {"good": _fake_run("good", perfect, labels, vendors, 100.0),
            "bad": _fake_run("bad", always_sick, labels, vendors, 50.0)}
    table = tables.metric_table(runs)
    good = table[(table["strategy"] == "good") & (table["scope"] == "macro")]
    assert good.set_index("metric").loc["balanced_accuracy", "value"] == 1.0
    headline = headline_table(runs).set_index("strategy")
    assert headline.loc["good", "bal_acc"] == 1.0 and headline.loc["bad", "spec"] == 0.0
    assert headline.loc["good", "MB_sent"] == pytest.approx(200 / 1e6)
    significance = tables.significance_table(runs, "good", n_boot=100)
    pooled = significance[significance["scope"] == "pooled"].iloc[0]
    assert pooled["diff"] == pytest.approx(0.5)
    same = tables.significance_table({"a": runs["good"], "b": runs["good"]}, "a",
                                        n_boot=50)
    assert (same["diff"] == 0).all()


def test_reports_readme_shows_headline_and_links(tmp_path: Path) -> None:
    headline = pd.DataFrame({"strategy": ["med_duallora"], "bal_acc": [0.75]})
    save_table(headline, tmp_path, "headline")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "04_vendor_metrics.png").write_bytes(b"png")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "04_med_duallora.ipynb").write_text("{}")
    text = write_reports_readme(tmp_path, wall_seconds=120,
                                notebook_seconds={"04_med_duallora.ipynb": 60}).read_text()
    assert "| med_duallora | 0.750 |" in text
    assert "(figures/04_vendor_metrics.png)" in text and "(1.0 min)" in text
    assert "2.0 min" in text


def test_markdown_table_escapes_and_truncates() -> None:
    frame = pd.DataFrame({"a": ["x|y"] * 3, "b": [1.0, float("nan"), 2.5]})
    text = markdown_table(frame, max_rows=2)
    assert "x\\|y" in text and "1 more rows" in text
    assert json.dumps(text)  # plain text


def test_run_reader_needs_metrics_and_reads_optional_files_as_empty(tmp_path: Path) -> None:
    from duallora.errors import KitError

    with pytest.raises(KitError, match="metrics.csv missing"):
        run_reader.load_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"strategy": "local", "rounds": 1}))
    pd.DataFrame([{"round": 1, "client": "pooled", "split": "test", "metric": "auc",
                   "value": 0.5}]).to_csv(tmp_path / "metrics.csv", index=False)
    run = run_reader.load_run(tmp_path, "baseline")
    assert run.name == "baseline" and run.config["strategy"] == "local"
    assert run.predictions.empty and list(run.predictions.columns) == [
        "subject_id", "client", "split", "label", "prob", "pred"]
    assert run.comm.empty and list(run.comm.columns) == run_reader.COMM_COLUMNS
    assert run.timing == {} and run.events == [] and run.norms.empty
    assert run.final_metrics()["value"].tolist() == [0.5]

