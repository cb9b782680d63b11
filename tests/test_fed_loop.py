"""End-to-end runs on the small phantom cohort with the real (tiny) ConvViT.

Every strategy through the ``duallora train`` command line; the prefix cache against the full
forward; a run killed with SIGKILL mid-round and resumed against an unbroken run; dropped and
failing clients; a held-out vendor; clear errors for bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from duallora.base.config import STRATEGY_NAMES, TrainConfig
from duallora.cli import main
from duallora.federated.loop import run_training
from duallora.federated.sites import Capabilities

RUN_FILES = ("config.json", "metrics.csv", "predictions.csv", "comm.jsonl")


def _config(data: Path, cache: Path, **changes) -> TrainConfig:
    values = {"data": str(data), "fm": "none", "model_size": "test-tiny", "rounds": 2,
              "local_epochs": 1, "bootstrap": 30, "max_train_per_client": 8,
              "cache_dir": str(cache), "strategy": "med_duallora"}
    values.update(changes)
    return TrainConfig.from_dict(values)


def _read(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in RUN_FILES}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefix_cache")


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_quick_cli_run_writes_the_run_directory(strategy, harmonized_dir, cache, tmp_path,
                                                capsys) -> None:
    out = tmp_path / strategy
    code = main(["train", "--data", str(harmonized_dir), "--strategy", strategy, "--out",
                 str(out), "--quick", "--fm", "none", "--cache-dir", str(cache), "--bootstrap",
                 "20", "--model-size", "test-tiny", "--no-progress"])
    assert code == 0
    assert strategy in capsys.readouterr().out
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last.pt").is_file()
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == ["round", "client", "split", "metric", "value"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["subject_id", "client", "split", "label", "prob", "pred"]
    vendors = set(pd.read_csv(harmonized_dir / "metadata.csv")["vendor"])
    test = predictions[predictions["split"] == "test"]
    assert set(test["client"]) == vendors          # each vendor's personalized model
    assert test["prob"].between(0, 1).all()
    final = metrics[(metrics["round"] == 2) & (metrics["split"] == "test")]
    assert {"pooled", "macro"} <= set(final["client"])
    assert {"balanced_accuracy", "sensitivity", "specificity", "auc", "mcc", "f1",
            "balanced_accuracy_ci_low"} <= set(final["metric"])
    messages = [json.loads(line) for line in (out / "comm.jsonl").read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"] == strategy and config["quick"] is True
    if strategy in ("single_site", "centralized"):
        assert messages == []
        return
    assert {m["direction"] for m in messages} == {"up", "down"}
    assert all(m["bytes"] > 0 and m["keys"] for m in messages)
    # round 0: every client's feature moments for the head standardization (same size each)
    stats_ups = [m for m in messages if m["direction"] == "up" and m["round"] == 0]
    assert {m["client"] for m in stats_ups} == vendors
    assert len({m["bytes"] for m in stats_ups}) == 1
    ups = [m for m in messages if m["direction"] == "up" and m["round"] > 0]
    assert {m["client"] for m in ups} == vendors
    if strategy == "med_duallora":
        assert not any("local" in key for m in ups for key in m["keys"])
        assert (out / "checkpoints" / "final" / "peft" / "global" / "adapter_config.json").is_file()
    if strategy in ("fedavg_full", "fedavg_lora", "ffa_lora", "med_duallora"):
        assert "test_global" in set(predictions["split"])
    sizes = {m["bytes"] for m in ups}
    assert len(sizes) == 1  # every client uploads the same tensors


def test_prefix_cache_gives_the_same_run(harmonized_dir, cache, tmp_path) -> None:
    cached = run_training(_config(harmonized_dir, cache), tmp_path / "cached", progress=False)
    full = run_training(_config(harmonized_dir, cache, prefix_cache=False), tmp_path / "full",
                        progress=False)
    a, b = pd.read_csv(cached / "predictions.csv"), pd.read_csv(full / "predictions.csv")
    assert list(a["subject_id"]) == list(b["subject_id"])
    torch.testing.assert_close(torch.tensor(a["prob"].values), torch.tensor(b["prob"].values),
                               rtol=0, atol=1e-5)
    assert (a["pred"] == b["pred"]).all()
    ma, mb = pd.read_csv(cached / "metrics.csv"), pd.read_csv(full / "metrics.csv")
    merged = ma.merge(mb, on=["round", "client", "split", "metric"], suffixes=("_c", "_f"))
    assert len(merged) == len(ma) == len(mb)
    loss = merged[merged["metric"] == "loss"]
    torch.testing.assert_close(torch.tensor(loss["value_c"].values),
                               torch.tensor(loss["value_f"].values), rtol=1e-5, atol=1e-6)
    assert (cached / "comm.jsonl").read_bytes() == (full / "comm.jsonl").read_bytes()
    assert any(cache.glob("prefix-*.safetensors"))
    # the comparison helpers see two equal runs as equal
    from duallora.results.compare import paired_strategy_test, results_table

    table = results_table([cached, full])
    pooled = table[table["scope"] == "pooled"]
    assert len(pooled) == 2 and pooled["balanced_accuracy"].nunique() == 1
    assert (pooled["bytes_per_round"] > 0).all()
    same = paired_strategy_test(cached, full, n_boot=50)
    assert same["diff"] == 0 and same["permutation_p"] == 1.0
    # the one run reader sees every file the loop wrote, and the transport comparison of
    # notebook 05 calls two identical runs identical
    from duallora.results.compare import compare_runs
    from duallora.results.run_reader import load_run

    run = load_run(cached)
    assert run.config["strategy"] == "med_duallora" and run.name == "cached"
    assert run.metrics.equals(pd.read_csv(cached / "metrics.csv"))
    assert run.predictions.equals(pd.read_csv(cached / "predictions.csv"))
    assert len(run.comm) == len((cached / "comm.jsonl").read_text().splitlines())
    assert set(run.timing["rounds"]) == {"1", "2"} and isinstance(run.events, list)
    assert set(run.final_metrics()["round"]) == {2}
    agreement = compare_runs(cached, full).set_index("what")
    assert agreement["same_structure"].all()
    # the same run, except the counted compute: the cache skips the frozen prefix
    metrics_row = agreement.index.str.startswith("metrics.csv")
    assert (agreement.loc[~metrics_row, "value"] == 0).all()
    differs = merged[merged["value_c"] != merged["value_f"]]
    assert set(differs["metric"]) == {"train_flops_per_subject", "train_flops_total"}
    assert (differs["value_c"] < differs["value_f"]).all()


_KILL_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
import duallora.federated.loop as loop
import duallora.federated.sites as sites
from duallora.base.config import TrainConfig

config = TrainConfig.from_dict(json.loads(sys.argv[1]))
real_train = sites.train_client

def train_then_die(model, received, private, data, config, round_idx):
    update = real_train(model, received, private, data, config, round_idx)
    if round_idx == 2:   # one client of round 2 has trained, the others not: mid-round
        os.kill(os.getpid(), signal.SIGKILL)
    return update

sites.train_client = train_then_die  # what the in-process sites call
loop.run_training(config, Path(sys.argv[2]), progress=False)
"""


def test_resume_after_sigkill_is_bit_identical(harmonized_dir, cache, tmp_path) -> None:
    config = _config(harmonized_dir, cache, rounds=3, drop_prob=0.2)
    reference = run_training(config, tmp_path / "reference", progress=False)
    broken = tmp_path / "broken"
    result = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, config.to_json(), str(broken)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == -9, result.stderr[-2000:]
    assert not (broken / "predictions.csv").exists()
    assert torch.load(broken / "checkpoints" / "last.pt", weights_only=False)["round"] == 1
    with pytest.raises(Exception, match="--resume"):
        run_training(config, broken, progress=False)
    run_training(config, broken, resume=True, progress=False)
    assert _read(broken) == _read(reference)


def test_dropped_and_failing_clients_are_left_out(harmonized_dir, cache, tmp_path) -> None:
    vendors = sorted(set(pd.read_csv(harmonized_dir / "metadata.csv")["vendor"]))
    failing = vendors[0]
    config = _config(harmonized_dir, cache, rounds=3, drop_prob=0.3, fail_clients=[failing],
                     min_clients=2)
    out = run_training(config, tmp_path / "faults", progress=False)
    events = json.loads((out / "events.json").read_text())
    assert {e["event"] for e in events} >= {"failed"}
    assert all(e["client"] == failing for e in events if e["event"] == "failed")
    messages = [json.loads(line) for line in (out / "comm.jsonl").read_text().splitlines()
                if json.loads(line)["round"] > 0]  # round 0 is the feature-statistics exchange
    assert messages
    assert failing not in {m["client"] for m in messages if m["direction"] == "up"}
    metrics = pd.read_csv(out / "metrics.csv")
    aggregated = metrics[metrics["metric"] == "clients_aggregated"]
    uploads = pd.DataFrame([m for m in messages if m["direction"] == "up"])
    per_round = uploads.groupby("round").size()
    skipped = set(metrics.loc[metrics["metric"] == "round_skipped", "round"])
    assert all(per_round.get(r, 0) < 2 for r in skipped)  # skipped only below min_clients
    assert list(aggregated["value"]) == [n for r, n in per_round.items() if r not in skipped]
    # too few clients: every round skipped, the global model stays at its init
    strict = _config(harmonized_dir, cache, rounds=2, fail_clients=vendors[:-1], min_clients=2)
    skipped = run_training(strict, tmp_path / "skipped", progress=False)
    state = torch.load(skipped / "checkpoints" / "last.pt", weights_only=False)
    assert state["round"] == 2
    rounds_skipped = pd.read_csv(skipped / "metrics.csv").query("metric == 'round_skipped'")
    assert len(rounds_skipped) == 2
    from duallora.federated.client_model import build_client_model

    init = build_client_model(strict).shared_payload()
    assert all(torch.equal(state["global"][k], init[k]) for k in init)


def test_holdout_vendor_is_only_evaluated(harmonized_dir, cache, tmp_path) -> None:
    meta = pd.read_csv(harmonized_dir / "metadata.csv")
    held = sorted(set(meta["vendor"]))[0]
    out = run_training(_config(harmonized_dir, cache, holdout_vendor=held,
                               strategy="fedavg_lora"), tmp_path / "holdout", progress=False)
    predictions = pd.read_csv(out / "predictions.csv")
    holdout = predictions[predictions["split"] == "holdout"]
    assert set(holdout["client"]) == {held}
    assert len(holdout) == int((meta["vendor"] == held).sum())
    assert held not in set(predictions.loc[predictions["split"] == "test", "client"])
    messages = [json.loads(line) for line in (out / "comm.jsonl").read_text().splitlines()]
    assert held not in {m["client"] for m in messages}


def test_bad_input_gives_one_clear_line(harmonized_dir, tmp_path, capsys) -> None:
    bad_meta = tmp_path / "bad"
    bad_meta.mkdir()
    meta = pd.read_csv(harmonized_dir / "metadata.csv").drop(columns=["label"])
    meta.to_csv(bad_meta / "metadata.csv", index=False)
    cases = [
        (["--data", str(harmonized_dir), "--strategy", "fedprox"], "unknown strategy"),
        (["--data", str(tmp_path / "missing"), "--strategy", "single_site"], "no such folder"),
        (["--data", str(bad_meta), "--strategy", "single_site", "--fm", "none"], "label"),
        (["--data", str(harmonized_dir), "--strategy", "single_site", "--blocks", "9"], "--blocks"),
    ]
    for args, expected in cases:
        assert main(["train", *args, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines


def test_sweep_command_trains_and_tabulates(harmonized_dir, cache, tmp_path, capsys) -> None:
    """``duallora sweep``: one ``duallora train`` process per strategy and seed, then the
    results table and the paired test against med_duallora."""
    out = tmp_path / "sweep"
    code = main(["sweep", "--data", str(harmonized_dir), "--out", str(out), "--strategies",
                 "single_site", "med_duallora", "--seeds", "0", "--jobs", "2", "--threads", "1",
                 "--", "--quick", "--fm", "none", "--model-size", "test-tiny", "--bootstrap",
                 "20", "--cache-dir", str(cache)])
    assert code == 0, capsys.readouterr().err
    results = pd.read_csv(out / "results.csv")
    assert set(results["strategy"]) == {"single_site", "med_duallora"}
    assert set(results["seed"]) == {0}
    paired = pd.read_csv(out / "paired.csv")
    assert list(paired[["a", "b"]].itertuples(index=False, name=None)) == [
        ("med_duallora", "single_site")]


class _PipelinedSites:
    """In-process sites that take the validation of round r with the training of round
    r + 1, and the last validation with the final test, as the Flower transport does
    (validation first; each site decides its own selection, ``federated.last_validation``)."""

    capabilities = Capabilities(validates_with_next_round=True, validates_with_final_test=True)

    def __init__(self, inner, calls: list) -> None:
        from duallora.federated.last_validation import PrefetchedTests

        self.inner, self.calls, self.prefetched = inner, calls, PrefetchedTests()
        self.decisions: list[bool] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_after_validation(self, group, plan, round_idx, requests):
        self.calls.append((group, round_idx))
        return self.inner.evaluate(group, plan), self.inner.train(round_idx, requests)

    def validate_then_test(self, group, plan, kept, last, kept_scores, rule):
        from duallora.federated.last_validation import LAST, merged_requests, site_takes_last

        self.calls.append((group, "final"))
        answers = self.inner.evaluate(group, plan)
        for name in sorted(set(plan) | set(kept) | set(last)):
            takes_last = None
            for item, when in merged_requests([i for _, i in kept.get(name, [])],
                                              [i for _, i in last.get(name, [])]):
                if when is not None:
                    if takes_last is None:
                        takes_last = site_takes_last(answers[name][0], kept_scores[name], rule)
                        self.decisions.append(takes_last)
                    if (when == LAST) != takes_last:
                        continue
                made = self.inner.evaluate("final", {name: [item]})[name][0]
                self.prefetched.add(name, item, made)
        return answers

    def evaluate(self, group, requests):
        if group != "final":
            return self.inner.evaluate(group, requests)
        found, missing = self.prefetched.take(requests)
        if missing:
            self.calls.append(("final", sorted(missing)))
        return found | (self.inner.evaluate(group, missing) if missing else {})


@pytest.mark.parametrize(("selection", "strategy"), [("site-val-ba", "med_duallora"),
                                                     ("final", "fedavg_lora_ft"),
                                                     ("pooled-val-loss", "med_duallora")])
def test_validation_pipelined_with_the_next_round_gives_the_same_run(
        selection, strategy, harmonized_dir, cache, tmp_path) -> None:
    """The driver's pipelining (one message per site per round over Flower) changes when the
    validation and the final test are asked for, never what is computed: the run directory
    is byte-identical. Under a rule each site can apply alone, the final test goes with the
    last validation (nothing is asked afterwards); under pooled-val-loss it cannot."""
    from duallora.base.rundir import RunDir
    from duallora.federated import loop
    from duallora.federated.client_model import build_client_model
    from duallora.federated.prepare import prepare_cohort
    from duallora.federated.sites import InProcessSites
    from duallora.federated.strategies import get_strategy

    config = _config(harmonized_dir, cache, rounds=3, drop_prob=0.3, seed=3,
                     selection=selection, strategy=strategy)
    plain = run_training(config, tmp_path / "plain", progress=False)
    strategy_ = get_strategy(config.strategy, config.head)
    model = build_client_model(config, strategy_)
    calls: list = []
    sites = _PipelinedSites(InProcessSites(config, model, prepare_cohort(config, model)), calls)
    rundir = RunDir(tmp_path / "pipelined")
    rundir.prepare(resume=False, overwrite=False)
    rundir.write_config(config)
    loop.run_federation(config, strategy_, model, sites, rundir, progress=False)
    if selection == "pooled-val-loss":
        assert calls == [("1", 2), ("2", 3), ("final", sorted(calls[-1][1]))]
    else:
        assert calls == [("1", 2), ("2", 3), ("3", "final")]
    if selection == "site-val-ba":  # some site keeps an earlier round's model (its test of
        assert False in sites.decisions  # the last round is never made)
    if selection == "final":  # every site takes the last round
        assert sites.decisions and all(sites.decisions)
    assert _read(plain) == _read(tmp_path / "pipelined")
