"""The thin ClientApp and the long-lived site worker: codec, imports, socket, failure reply."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from duallora.errors import KitError
from duallora.flower.localhost.launcher import FORK_SERVER, LocalhostFederation, NodeSpec
from duallora.flower.localhost.processes import group_alive
from duallora.flower.protocol import CONFIG, HELLO
from duallora.flower.site.client_app import WorkerUnavailableError, ask_worker
from duallora.flower.site.handlers import SiteCache
from duallora.flower.site.relay_codec import decode_content, encode_content
from duallora.flower.site.worker import socket_path


def test_the_relay_codec_carries_every_record_exactly():
    rng = np.random.default_rng(0)
    content = RecordDict({
        "arrays": ArrayRecord({"a.lora_A.global": Array(rng.normal(size=(3, 5)).astype("f4")),
                               "b": Array(np.arange(7, dtype=np.int64)),
                               "empty": Array(np.zeros((0, 2), np.float64))}),
        "config": ConfigRecord({"round": 3, "text": "é\"x", "flag": True, "lr": 1e-3,
                                "blob": b"\x00\xff", "ids": ["s1", "s2"], "probs": [0.25, 1.0],
                                "nan": math.nan}),
        "metrics": MetricRecord({"num-examples": 12, "loss": 0.5}),
    })
    back, extra = decode_content(encode_content(content, {"message-type": "train"}))
    assert extra == {"message-type": "train"}
    assert list(back) == list(content)
    for key, array in content["arrays"].items():
        np.testing.assert_array_equal(back["arrays"][key].numpy(), array.numpy())
        assert back["arrays"][key].dtype == array.dtype
    config = dict(back["config"])
    assert math.isnan(config.pop("nan"))
    assert config == {k: v for k, v in content["config"].items() if k != "nan"}
    assert isinstance(config["round"], int) and isinstance(config["lr"], float)
    assert dict(back["metrics"]) == dict(content["metrics"])


def test_the_client_app_imports_neither_torch_nor_the_kit():
    code = ("import sys, duallora.flower.site.client_app as c; "
            "bad = [m for m in ('torch', 'pandas', 'peft', 'duallora.federated', "
            "'duallora.flower.wire', 'duallora.flower.site.handlers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_launcher_imports_no_peft():
    """``flower-local`` only starts and watches processes: PEFT (and transformers, about
    3 CPU-s) is for the processes that build the model."""
    code = ("import sys, duallora.commands.flower_local, duallora.flower.localhost.run; "
            "bad = [m for m in ('peft', 'transformers', 'duallora.federated.client_model') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_relay_gives_up_with_a_clear_reason_when_no_worker_answers(tmp_path: Path):
    started = time.monotonic()
    with pytest.raises(WorkerUnavailableError, match="duallora site-worker"):
        ask_worker(tmp_path, b"x", wait=0.5)
    assert time.monotonic() - started < 5


def test_a_deep_state_dir_gets_a_short_stable_socket_path(tmp_path: Path):
    deep = tmp_path / ("x" * 120)
    path = socket_path(deep)
    assert len(str(path)) <= 100 and path.name.startswith("duallora-")
    assert socket_path(deep) == path and socket_path(tmp_path / ("y" * 120)) != path
    assert socket_path(tmp_path) == tmp_path / "worker.sock"  # short: inside the state dir


def test_the_worker_answers_over_its_socket_and_keeps_serving_after_a_bad_request(
        harmonized_dir: Path, tmp_path: Path):
    state = tmp_path / "state"
    worker = subprocess.Popen(
        [sys.executable, "-m", "duallora", "site-worker", "--client-name", "GE",
         "--data-dir", str(harmonized_dir), "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        hello = encode_content(RecordDict({CONFIG: ConfigRecord({"run-key": "r"})}),
                               {"message-type": HELLO, "client-name": "GE"})
        reply, status = decode_content(ask_worker(state, hello, wait=120))
        assert status == {"ok": True}
        frame = pd.read_csv(harmonized_dir / "metadata.csv")
        expected = int(((frame.vendor == "GE") & (frame.split == "train")).sum())
        assert dict(reply[CONFIG]) == {"client-name": "GE", "n-train": expected}
        wrong = encode_content(RecordDict(), {"message-type": HELLO, "client-name": "Philips"})
        reply, status = decode_content(ask_worker(state, wrong, wait=5))
        assert status["ok"] is False and "serves site 'GE'" in status["error"]
        assert reply[CONFIG]["error-type"] == "KitError"
        again, _ = decode_content(ask_worker(state, hello, wait=5))  # still serving
        assert again[CONFIG]["n-train"] == expected
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert not socket_path(state).exists()  # removed on SIGTERM


def test_the_site_cache_builds_the_model_and_cohort_once_per_run(harmonized_dir: Path,
                                                                 tmp_path: Path):
    from duallora.base.config import TrainConfig, resolve
    from duallora.flower.site.handlers import Site

    config = resolve({"strategy": "med_duallora", "fm": "none"}, quick=True)
    instructions = ConfigRecord({"run-key": "r1", "train-config": config.to_json()})
    cache = SiteCache(Site("GE", harmonized_dir, tmp_path))
    first = cache.model_and_data("r1", instructions)
    second = cache.model_and_data("r1", instructions)
    assert cache.builds == 1 and first[1] is second[1] and first[2] is second[2]
    other = ConfigRecord({"run-key": "r1", "train-config":
                          TrainConfig.from_dict({**config.__dict__, "seed": 5}).to_json()})
    cache.model_and_data("r1", other)
    assert cache.builds == 2  # a changed config is a new build


def test_the_first_hello_of_a_run_carries_the_head_moments_of_a_training_site(
        harmonized_dir: Path, tmp_path: Path):
    from duallora.base.config import resolve
    from duallora.flower.protocol import ARRAYS, HEAD_MOMENTS, HOLDOUT_KEY, WITH_HEAD_MOMENTS
    from duallora.flower.site.handlers import Site, handle
    from duallora.flower.wire import record_to_payload

    config = resolve({"strategy": "med_duallora", "fm": "none"}, quick=True)
    round0 = {"round": 0, "run-key": "r1", "train-config": config.to_json()}
    cache = SiteCache(Site("GE", harmonized_dir, tmp_path))

    def ask(message_type: str, **values) -> RecordDict:
        return handle(message_type, RecordDict({CONFIG: ConfigRecord({**round0, **values})}),
                      cache)

    alone = record_to_payload(ask(HEAD_MOMENTS)[ARRAYS])
    with_hello = ask(HELLO, **{WITH_HEAD_MOMENTS: True, HOLDOUT_KEY: ""})
    assert with_hello[CONFIG]["client-name"] == "GE" and with_hello[CONFIG]["n-train"] > 0
    moments = record_to_payload(with_hello[ARRAYS])
    assert sorted(moments) == sorted(alone) and alone
    assert all(torch.equal(moments[key], alone[key]) for key in alone)
    # the hold-out site and a plain hello send none
    assert ARRAYS not in ask(HELLO, **{WITH_HEAD_MOMENTS: True, HOLDOUT_KEY: "GE"})
    assert ARRAYS not in ask(HELLO)


class FakeGrid:
    """A grid whose nodes answer at once: node 1 is site A; site B never connects."""

    def __init__(self) -> None:
        self.replies: list = []
        self.count = 0

    def get_node_ids(self) -> list[int]:
        return [1]

    def push_messages(self, messages: list) -> list[str]:
        from types import SimpleNamespace

        ids = []
        for msg in messages:
            assert msg.metadata.dst_node_id == 1
            self.count += 1
            ids.append(f"m{self.count}")
            self.replies.append(SimpleNamespace(
                content=RecordDict({CONFIG: ConfigRecord({"client-name": "A"})}),
                metadata=SimpleNamespace(reply_to_message_id=ids[-1],
                                         message_type=msg.metadata.message_type),
                has_error=lambda: False))
        return ids

    def pull_messages(self, ids: list[str]) -> list:
        ready = [r for r in self.replies if r.metadata.reply_to_message_id in ids]
        self.replies = [r for r in self.replies if r not in ready]
        return ready


def test_a_site_that_stays_away_is_reported_absent_and_the_others_answer(monkeypatch):
    from flwr.app import MessageType
    from flwr.supercore.task_identity import TaskIdentity

    from duallora.flower.server.messaging import SiteAbsent, SiteDirectory, exchange

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    lines: list[str] = []
    directory = SiteDirectory(FakeGrid(), "run", log=lines.append)
    started = time.monotonic()
    replies = exchange(directory.grid, directory, {"A": RecordDict(), "B": RecordDict()},
                       MessageType.TRAIN, "1", timeout=60, site_wait=1.0)
    assert time.monotonic() - started < 10
    assert replies["A"].content[CONFIG]["client-name"] == "A"
    assert isinstance(replies["B"], SiteAbsent) and "not connected for 1 s" in str(replies["B"])
    assert any("site B stayed away" in line for line in lines)
    with pytest.raises(KitError, match="no reply from"):  # without site-wait: the old timeout
        exchange(directory.grid, directory, {"B": RecordDict()}, MessageType.TRAIN, "2",
                 timeout=1.5)


def test_forked_site_workers_serve_die_restart_and_stop_like_their_own_processes(
        harmonized_dir: Path, tmp_path: Path):
    """``flower-local`` forks its site workers from one warm parent (``worker_forks``): each
    is its own session, answers on its socket, is seen dead through /proc when killed (no
    zombie: the parent ignores SIGCHLD), is forked again by the same parent, reports a start-up
    error with its log, and nothing outlives ``stop``."""
    state = tmp_path / "sites" / "GE"
    nodes = [NodeSpec("GE", {"client-name": "GE", "data-dir": str(harmonized_dir),
                             "state-dir": str(state)}),
             NodeSpec("Nameless", {"client-name": "", "data-dir": str(harmonized_dir),
                                   "state-dir": str(tmp_path / "sites" / "Nameless")})]
    federation = LocalhostFederation(tmp_path / "fed", nodes, startup_timeout=120.0,
                                     fork_workers=True)
    hello = encode_content(RecordDict({CONFIG: ConfigRecord({"run-key": "r"})}),
                           {"message-type": HELLO, "client-name": "GE"})
    groups = []
    try:
        worker = federation.start_worker("GE")
        server = federation.processes[FORK_SERVER]
        groups += [worker.pid, server.pid]
        assert os.getsid(worker.pid) == worker.pid != server.pid
        reply, status = decode_content(ask_worker(state, hello, wait=60))
        assert status == {"ok": True} and reply[CONFIG]["client-name"] == "GE"
        assert "site worker GE" in worker.log_path.read_text()

        os.kill(worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while federation.worker_alive("GE") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not federation.worker_alive("GE")
        federation.keep_workers_up()
        again = federation.processes["worker:GE"]
        groups.append(again.pid)
        assert federation.restarts == ["GE"] and again.pid != worker.pid
        assert federation.processes[FORK_SERVER] is server and server.alive()  # no re-import
        assert decode_content(ask_worker(state, hello, wait=60))[1] == {"ok": True}

        with pytest.raises(KitError, match="failed to start") as failed:
            federation.start_worker("Nameless")
        assert "has exited" in str(failed.value) and "give --node-config" in str(failed.value)
    finally:
        federation.stop()
    assert not [pgid for pgid in groups if group_alive(pgid)]
