"""End to end: the kit's Flower app on a real SuperLink and four real SuperNodes.

One run of 2 rounds of med_duallora on the small phantom cohort, with Canon held out (a site that
only evaluates the global model), during which the GE site (SuperNode and worker) is stopped and
started again and the Philips site worker is killed (the launcher starts it again), compared with
the in-process loop of the same seed. Both configurations are made by the
command lines' own parsers from the same options, so they must agree (``--local-epochs 2``
equals the default and differs from ``--quick``'s 1: the old double application of ``--quick``
on the Flower side trained 1 epoch here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from duallora.base.command_line import build_parser
from duallora.base.config import TrainConfig
from duallora.commands import COMMAND_MODULES, flower_local, train
from duallora.federated.loop import run_training
from duallora.flower.localhost.launcher import LocalhostFederation
from duallora.flower.localhost.processes import group_alive
from duallora.flower.localhost.run import run_on_localhost
from duallora.flower.run_config import SITE_FIELDS

pytestmark = pytest.mark.slow
SITES = ["Canon", "GE", "Philips", "Siemens"]
HOLDOUT = "Canon"
TRAINERS = [site for site in SITES if site != HOLDOUT]
RESTARTED = "GE"
KILLED_WORKER = "Philips"
# the benchmark's protocol (duallora.benchmark.plans.PROTOCOL), so Flower is checked on it too
PROTOCOL_OPTIONS = ["--private-optimizer", "persistent", "--selection", "pooled-val-loss",
                    "--lr-schedule", "cosine", "--frames", "per-frame"]
OPTIONS = ["--quick", "--fm", "none", "--local-epochs", "2", "--bootstrap", "20",
           "--holdout-vendor", HOLDOUT, *PROTOCOL_OPTIONS]


def parsed(argv: list[str]) -> object:
    return build_parser("duallora", "", COMMAND_MODULES).parse_args(argv)


@pytest.fixture(scope="module")
def config(harmonized_dir: Path) -> TrainConfig:
    """What `duallora flower-local ... OPTIONS` trains."""
    args = parsed(["flower-local", "--clients", "4", "--data", str(harmonized_dir),
                   "--out", "unused", *OPTIONS])
    return flower_local.config_from_args(args, skip=SITE_FIELDS)


@pytest.fixture(scope="module")
def in_process(config: TrainConfig, harmonized_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`duallora train ... OPTIONS`, in this process."""
    cache = tmp_path_factory.mktemp("prefix-cache")
    args = parsed(["train", "--data", str(harmonized_dir), "--strategy", "med_duallora",
                   "--out", "unused", "--cache-dir", str(cache), *OPTIONS])
    train_config = train.config_from_args(args)
    assert train_config == dataclasses.replace(config, cache_dir=str(cache))
    assert train_config.local_epochs == 2 and train_config.rounds == 2
    # one thread, as each site worker has (the launcher sets OMP_NUM_THREADS=1): summation
    # order then matches, and the comparison below can stay at float tolerance
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_training(train_config, tmp_path_factory.mktemp("inproc") / "run",
                            progress=False)
    finally:
        torch.set_num_threads(threads)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def flower(config: TrainConfig, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("flower")
    groups: list[int] = []
    restarted: dict[str, float] = {}

    def stop_and_restart_one_site(federation: LocalhostFederation, run_dir: Path) -> None:
        """Once the server holds GE's round-1 upload, stop GE's SuperNode and start it again."""
        groups.extend(federation.process_groups())
        wire = run_dir / "flower" / "wire.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            lines = wire.read_text().splitlines() if wire.exists() else []
            if any(json.loads(line)["site"] == RESTARTED and json.loads(line)["group"] == "1"
                   and json.loads(line)["type"] == "train" for line in lines):
                break
            federation.check_alive()
            time.sleep(0.2)
        else:
            pytest.fail("the server never received GE's round-1 upload")
        federation.stop_node(RESTARTED)
        restarted["at"] = time.time()
        federation.start_node(RESTARTED)
        groups.extend(federation.process_groups())
        # a site worker dies (SIGKILL: no cleanup); the launcher's supervision starts it again
        os.kill(federation.processes[f"worker:{KILLED_WORKER}"].pid, signal.SIGKILL)
        restarted["killed"] = time.time()
        restarted["federation"] = federation

    start = time.perf_counter()
    local = run_on_localhost(config, base / "run", len(SITES), work_dir=base / "work",
                             during_run=stop_and_restart_one_site, timeout=1200)
    return {"local": local, "groups": groups, "restarted": restarted,
            "seconds": time.perf_counter() - start, "work": base / "work"}


def test_flower_run_completes_with_metrics_for_every_site(flower: dict):
    local = flower["local"]
    assert local.result.completed and sorted(local.sites) == SITES
    metrics = pd.read_csv(local.run_dir / "metrics.csv")
    for site in TRAINERS:
        losses = metrics[(metrics.client == site) & (metrics.split == "train")
                         & (metrics.metric == "loss")]
        assert sorted(losses["round"]) == [1, 2]
        assert losses["value"].notna().all()
        val = metrics[(metrics.client == site) & (metrics.split == "val")]
        assert set(val.metric) >= {"balanced_accuracy", "auc"}
    never = metrics[(metrics.client == HOLDOUT) & metrics.split.isin(["train", "val"])]
    assert never.empty  # it never trains nor validates; its rows are the hold-out test's
    predictions = pd.read_csv(local.run_dir / "predictions.csv")
    assert set(predictions.client) == set(SITES)
    held = predictions[predictions.client == HOLDOUT]
    assert set(held.split) == {"holdout"} and len(held) > 0
    timing = json.loads((local.run_dir / "timing.json").read_text())
    assert timing["transport"] == "flower" and len(timing["rounds"]) == 2
    config = json.loads((local.run_dir / "config.json").read_text())
    assert config["local_epochs"] == 2 and config["holdout_vendor"] == HOLDOUT


def test_the_held_out_site_only_evaluates(flower: dict):
    replies = [json.loads(line) for line in
               (flower["local"].run_dir / "flower" / "wire.jsonl").read_text().splitlines()]
    assert {r["type"] for r in replies if r["site"] == HOLDOUT} == {"evaluate"}
    events = [json.loads(line) for path in
              (flower["work"] / "sites" / HOLDOUT / "state" / "runs").glob("*/events.jsonl")
              for line in path.read_text().splitlines()]
    assert events and {e["kind"] for e in events} == {"evaluate"}
    assert all(e["global_only"] for e in events)


def test_nothing_private_reaches_the_server(flower: dict, in_process: Path):
    run_dir = flower["local"].run_dir
    replies = [json.loads(line)
               for line in (run_dir / "flower" / "wire.jsonl").read_text().splitlines()]
    # round 0's moments travel with each training site's hello
    assert {r["type"] for r in replies} >= {"train", "evaluate", "query.hello"}
    assert {r["site"] for r in replies} == set(SITES)
    for reply in replies:  # the local adapter's factors are called ...lora_A.local...
        assert not [name for name in reply["names"] if ".local." in name], reply
    # round 0's feature moments and every round's shared tensors: the in-process uploads
    uploaded = {name.split("/", 1)[1] for r in replies
                if r["type"] in ("train", "query.hello")
                for name in r["names"] if name.startswith("arrays/")}
    expected = {key for row in map(json.loads, (in_process / "comm.jsonl").read_text()
                                   .splitlines()) if row["direction"] == "up"
                for key in row["keys"]}
    assert uploaded == expected and uploaded
    # the site folders hold the local adapter; the run directory on the server does not
    site_files = list((flower["work"] / "sites" / "GE" / "state").rglob("*.safetensors"))
    assert site_files
    server_tensors = [load_file(str(p)) for p in run_dir.rglob("*.safetensors")]
    assert all("local" not in key for tensors in server_tensors for key in tensors)


def test_flower_matches_the_in_process_loop_with_the_same_seed(flower: dict, in_process: Path):
    """Byte for byte: every reduction over sites runs in site order (never in the order replies
    arrive), and both sides run one intra-op thread (the launcher's default for site workers;
    the fixture sets it in process), so the float arithmetic is the same operation by
    operation, a site stopped and started again and a killed worker included."""
    run_dir = flower["local"].run_dir
    ours = load_file(str(run_dir / "checkpoints" / "final" / "global.safetensors"))
    reference = load_file(str(in_process / "checkpoints" / "final" / "global.safetensors"))
    assert sorted(ours) == sorted(reference)
    assert any(".lora_A.global." in key for key in ours)
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key
    for name in ("predictions.csv", "metrics.csv", "comm.jsonl"):
        assert (run_dir / name).read_bytes() == (in_process / name).read_bytes(), name


def test_restarted_site_resumes_its_local_adapter_from_its_folder(flower: dict):
    assert flower["restarted"], "the SuperNode was not restarted"
    events_files = list((flower["work"] / "sites" / RESTARTED / "state" / "runs")
                        .glob("*/events.jsonl"))
    assert len(events_files) == 1
    events = [json.loads(line) for line in events_files[0].read_text().splitlines()]
    trained = {e["round"]: e for e in events if e["kind"] == "train" and "error" not in e}
    assert sorted(trained) == [1, 2]
    round2 = trained[2]
    assert round2["time"] > flower["restarted"]["at"]
    assert round2["base_round"] == 1 and round2["base_source"] == "disk"
    assert round2["base_digest"] == trained[1]["new_digest"] != "empty"


def test_a_killed_site_worker_is_started_again_and_resumes_from_its_folder(flower: dict):
    assert KILLED_WORKER in flower["restarted"]["federation"].restarts
    events = [json.loads(line) for path in
              (flower["work"] / "sites" / KILLED_WORKER / "state" / "runs").glob("*/events.jsonl")
              for line in path.read_text().splitlines()]
    after = [e for e in events if e["time"] > flower["restarted"]["killed"]
             and e.get("base_source") is not None]
    assert after and after[0]["base_source"] == "disk"  # a fresh worker: nothing in memory


def test_one_message_per_site_per_round(flower: dict):
    """Round 0's moments ride with the hello, and the validation of round r with round r + 1's
    training: per site, the hello, round 1's training,
    one message for round 2 (validation 1 + training 2), the last validation and the final
    test (the restarted site may be asked again: count distinct groups and types). Under
    pooled-val-loss, this run's rule, the final test waits for the pooled decision over the
    last validation; under a rule each site applies alone, the two travel together
    (tests/test_flower_baselines.py)."""
    replies = [json.loads(line) for line in
               (flower["local"].run_dir / "flower" / "wire.jsonl").read_text().splitlines()]
    for site in TRAINERS:
        mine = [(r["group"], r["type"]) for r in replies if r["site"] == site]
        assert sorted(set(mine)) == [("0", "query.hello"), ("1", "train"),
                                     ("2", "evaluate"), ("2", "train"),
                                     ("final", "evaluate")], site
        merged = [r for r in replies if r["site"] == site and r["group"] == "2"
                  and r["type"] == "train"]
        assert all("predictions" in r["names"] and "arrays" in r["names"] for r in merged)


def test_no_flower_process_is_left_running(flower: dict):
    assert flower["groups"]
    assert not [pgid for pgid in flower["groups"] if group_alive(pgid)]
    assert processes_mentioning(str(flower["work"])) == []


def test_flower_local_cli_rejects_bad_input_in_one_line(harmonized_dir: Path, tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "duallora", "flower-local", "--clients", "9",
                           "--data", str(harmonized_dir), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--clients 9" in done.stderr
    assert processes_mentioning(str(tmp_path)) == []


# Starts a command with SIGINT and SIGTERM at their defaults and unblocked, whatever the caller
# left: a background job of a non-interactive shell (job control off) starts with SIGINT
# ignored, an ignored disposition and the blocked mask survive fork and exec, and Python keeps an
# inherited-ignored SIGINT ignored (as under nohup). An exec wrapper, not preexec_fn, which is
# unsafe in a process with threads; the pid stays the launcher's.
SIGNALS_AT_DEFAULT = """import os, signal, sys
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
os.execv(sys.argv[1], sys.argv[1:])
"""


def signal_state(pid: int, sig: signal.Signals) -> dict[str, bool]:
    """Whether ``sig`` is ignored, blocked or caught by process ``pid`` (from /proc)."""
    fields = dict(line.split(":\t", 1)
                  for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    bit = 1 << (int(sig) - 1)
    return {name: bool(int(fields[key], 16) & bit)
            for name, key in (("ignored", "SigIgn"), ("blocked", "SigBlk"), ("caught", "SigCgt"))}


def stop_the_launcher_with(sig: signal.Signals, harmonized_dir: Path, tmp_path: Path
                           ) -> tuple[int, str, Path]:
    """Start ``flower-local`` (signals at their defaults), wait until the run is submitted, send
    ``sig``; return its exit code, its stderr and its work folder."""
    work = tmp_path / "work"
    # the README's `flower-local --tls` (TLS + SuperNode auth set up, then interrupted)
    command = [sys.executable, "-m", "duallora", "flower-local", "--tls", "--clients", "2",
               "--quick", "--fm", "none", "--data", str(harmonized_dir), "--out",
               str(tmp_path / "run"), "--work-dir", str(work)]
    launcher = subprocess.Popen([sys.executable, "-c", SIGNALS_AT_DEFAULT, *command],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        submitted = work / "flower" / "logs" / "flwr-run.log"
        deadline = time.monotonic() + 300
        while not submitted.exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert submitted.exists(), launcher.communicate(timeout=60)
        assert len(processes_mentioning(str(work))) >= 3  # SuperLink + 2 SuperNodes (+ children)
        assert (work / "flower" / "tls" / "ca.crt").is_file()
        # the launcher handles the signal itself (Python's SIGINT handler / our SIGTERM
        # handler). It blocks every signal for an instant whenever it forks (CPython's
        # subprocess does, and the launcher polls `flwr ls`), so "not blocked" is checked as
        # "seen unblocked within a few seconds": a blocked signal stays pending, not lost.
        states = []
        for _ in range(50):
            states.append(signal_state(launcher.pid, sig))
            if not states[-1]["blocked"]:
                break
            time.sleep(0.1)
        assert states[-1] == {"ignored": False, "blocked": False, "caught": True}, states
        launcher.send_signal(sig)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:  # a failed check: let the launcher tear down, then kill it
            launcher.terminate()
            try:
                launcher.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.communicate()
    return launcher.returncode, stderr, work


def test_ctrl_c_stops_every_process_the_launcher_started(harmonized_dir: Path, tmp_path: Path):
    code, stderr, work = stop_the_launcher_with(signal.SIGINT, harmonized_dir, tmp_path)
    assert code == 130, stderr
    assert "interrupted" in stderr
    assert processes_mentioning(str(work)) == []


def test_sigterm_stops_every_process_the_launcher_started(harmonized_dir: Path, tmp_path: Path):
    code, stderr, work = stop_the_launcher_with(signal.SIGTERM, harmonized_dir, tmp_path)
    assert code == 143, stderr
    assert "interrupted (SIGTERM)" in stderr
    assert processes_mentioning(str(work)) == []
