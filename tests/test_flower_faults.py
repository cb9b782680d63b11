"""A site that stays away: the round goes on with the others (as in-process ``--min-clients``),
and its absence is logged. Two real sites (the first two vendors: Siemens, Philips), with TLS
and SuperNode authentication (what ``flower-local --tls`` sets up: every site's key
registered); Philips's site goes down for good after its first upload, and ``site-wait`` (5 s)
lets the server go on with Siemens alone (``--min-clients 1``). A third site would only add
processes: the rule under test is "fewer sites than invited, at least min-clients"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from duallora.base.command_line import build_parser
from duallora.commands import COMMAND_MODULES, flower_local
from duallora.flower.localhost.launcher import LocalhostFederation
from duallora.flower.localhost.run import run_on_localhost
from duallora.flower.run_config import SITE_FIELDS
from duallora.flower.settings import FlowerSettings

pytestmark = pytest.mark.slow
AWAY = "Philips"


def test_a_site_that_stays_away_sits_the_rounds_out_and_is_logged(harmonized_dir: Path,
                                                                  tmp_path: Path):
    args = build_parser("duallora", "", COMMAND_MODULES).parse_args(
        ["flower-local", "--clients", "2", "--data", str(harmonized_dir), "--out", "unused",
         "--quick", "--fm", "none", "--rounds", "2", "--bootstrap", "20", "--min-clients", "1"])
    config = flower_local.config_from_args(args, skip=SITE_FIELDS)

    def take_one_site_down(federation: LocalhostFederation, run_dir: Path) -> None:
        wire = run_dir / "flower" / "wire.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            lines = [json.loads(line) for line in
                     (wire.read_text().splitlines() if wire.exists() else [])]
            if any(r["site"] == AWAY and r["group"] == "1" and r["type"] == "train"
                   for r in lines):
                break
            federation.check_alive()
            time.sleep(0.2)
        else:
            pytest.fail(f"the server never received {AWAY}'s round-1 upload")
        federation.stop_node(AWAY)  # and it never comes back

    local = run_on_localhost(config, tmp_path / "run", 2, work_dir=tmp_path / "work",
                             settings=FlowerSettings(site_wait=5.0),
                             during_run=take_one_site_down, timeout=900, tls=True)
    assert local.result.completed
    metrics = pd.read_csv(local.run_dir / "metrics.csv")
    server = metrics[metrics.client == "server"]
    aggregated = server[server.metric == "clients_aggregated"].set_index("round")["value"]
    assert aggregated.to_dict() == {1: 2, 2: 1}  # round 2 went on with Siemens alone
    assert metrics[(metrics.client == AWAY) & (metrics.metric == "failed")]["round"].tolist() \
        == [2]
    events = json.loads((local.run_dir / "events.json").read_text())
    failed = [e for e in events if e["client"] == AWAY and e["event"] == "failed"]
    assert failed and "SiteAbsent" in failed[0]["error"]
    absent = {(e["split"], e["round"]) for e in events
              if e["client"] == AWAY and e["event"] == "absent"}
    assert ("val", 1) in absent and ("test", 2) in absent
    predictions = pd.read_csv(local.run_dir / "predictions.csv")
    assert set(predictions.client) == {"Siemens"}  # the absent site has no test rows
    log = (local.run_dir / "flower" / "server.log").read_text()
    assert f"site {AWAY} stayed away" in log
    # it ran over TLS with registered keys: the CLI connection and every node verify the CA
    flower_dir = tmp_path / "work" / "flower"
    cli = (flower_dir / "homes" / "cli" / "config.toml").read_text()
    assert "root-certificates" in cli and "insecure" not in cli
    assert sorted(p.name for p in (flower_dir / "tls" / "nodes").glob("*.pub")) == \
        ["Philips_key.pub", "Siemens_key.pub"]
    for site in ("Siemens", AWAY):  # both registered and activated (one left later)
        assert "Failed to activate" not in (flower_dir / "logs" /
                                            f"supernode-{site}.log").read_text()
