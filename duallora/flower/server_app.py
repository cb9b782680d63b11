"""The Flower ServerApp: the in-process training loop, with every client call sent to a site.

The round logic is the federated core's own (``duallora.federated.loop``: ``run_round``,
``validate_round``, ``finish``, the same ``Strategy.aggregate``, metrics and ``RunDir``). This
module only changes *where* a client's work happens: before the loop asks for a round's
training (or validation, or final test), ``RemoteSites`` sends the requests to all sites at once
over the Flower grid and collects the replies; the loop's ``train`` / ``evaluate`` calls then
receive those results. So the run directory (config, metrics, predictions, comm log,
checkpoints) has the same format and, for the same seed, the same numbers as
``duallora train``.

What the server holds about a site's private part is a *reference* (the round whose private
state to use), never tensors: the loop's ``state["private"][site]`` is ``{PRIVATE_REF: round}``.
Every reply is checked on arrival: a reply naming anything private (or anything called
``local``) stops the run, and ``RUN_DIR/flower/wire.jsonl`` logs every name that arrived.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from duallora.errors import KitError
from duallora.flower.messaging import HEAD_MOMENTS, SiteDirectory, SiteFailed, exchange
from duallora.flower.run_config import flower_settings, train_config_from_run_config
from duallora.flower.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    PREDICTIONS,
    content_names,
    forbidden_names,
    payload_to_record,
    record_to_payload,
)

PRIVATE_REF = "site-private-round"   # the loop's private "payload" on the server: a round number
CLIPPING_NORM_KEY = "clipping_norm"  # what Flower's fixedclipping_mod reads
FINISHED = "finished.json"           # RUN_DIR/flower/finished.json: the ServerApp's last word

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = flower_settings(dict(context.run_config))
    config = train_config_from_run_config(dict(context.run_config))
    run_flower_training(grid, config, settings)


def private_ref(round_idx: int) -> dict[str, torch.Tensor]:
    return {PRIVATE_REF: torch.tensor(int(round_idx))}


def ref_round(private: dict[str, torch.Tensor] | None) -> int:
    """The round a private reference points to (0: the site has no private state yet)."""
    if not private:
        return 0
    if set(private) != {PRIVATE_REF}:
        raise KitError("the server holds private tensors of a site; this must never happen")
    return int(private[PRIVATE_REF])


class RemoteError(RuntimeError):
    """A site's ClientApp raised; re-raised on the server under the site's exception name."""


def remote_exception(type_name: str, text: str) -> Exception:
    """An exception whose class name is the site's, so the loop's event log reads the same."""
    from duallora.federated.client import ClientError

    if type_name == ClientError.__name__:
        return ClientError(text)
    return type(type_name, (RemoteError,), {})(text)


@dataclass
class GaussianNoiseOnAggregate:
    """Central DP for the global update: the strategy's weighted mean plus Gaussian noise.

    The sites clip their update with Flower's ``fixedclipping_mod`` (L2 norm ``clipping_norm``
    of upload minus received); then one site moves the weighted mean by at most
    ``max_k(w_k) * clipping_norm``, and the noise standard deviation is ``noise_multiplier``
    times that (Flower's ``compute_stdv`` for equal weights). Noise is drawn from
    ``(seed, round)`` so a run is reproducible. Everything else is the wrapped strategy's.
    """

    strategy: Any
    noise_multiplier: float
    clipping_norm: float
    seed: int
    round_idx: int = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.strategy, name)

    def aggregate(self, uploads: list[tuple[dict, int]]) -> dict[str, torch.Tensor]:
        from flwr.supercore.differential_privacy import compute_stdv

        mean = self.strategy.aggregate(uploads)
        total = float(sum(n for _, n in uploads))
        heaviest = max(n for _, n in uploads) / total
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, 1) * heaviest
        rng = np.random.default_rng([self.seed, self.round_idx, 7])
        return {name: tensor + torch.from_numpy(
                    rng.normal(0.0, std, tuple(tensor.shape))).to(tensor.dtype)
                for name, tensor in mean.items()}


@dataclass
class RemoteSites:
    """Sends the loop's client calls to the sites ahead of time and hands back the answers."""

    grid: Grid
    sites: SiteDirectory
    config: Any
    strategy: Any
    private_names: list[str]
    settings: dict[str, Any]
    wire_log: Path
    head_norm: dict[str, torch.Tensor] | None = None  # pooled, sent with every message
    train_results: dict[str, Any] = field(default_factory=dict)
    eval_results: dict[tuple[str, str, bool], tuple[Any, dict | None, Any]] = \
        field(default_factory=dict)

    # -- messages -------------------------------------------------------------------------
    def instructions(self, round_idx: int, **extra: Any) -> ConfigRecord:
        values = {"round": round_idx, "run-key": self.sites.run_key,
                  "train-config": self.config.to_json()}
        if self.head_norm is not None:
            values.update({f"head-norm-{key}": [float(v) for v in self.head_norm[key].flatten()]
                           for key in ("mean", "std")})
        values.update(extra)
        return ConfigRecord(values)

    def check_reply(self, group: str, site: str, reply: Message) -> None:
        """Log what arrived and stop the run if anything private did."""
        names = content_names(reply.content)
        with self.wire_log.open("a") as handle:
            handle.write(json.dumps({"group": group, "site": site,
                                     "type": reply.metadata.message_type,
                                     "names": names}) + "\n")
        bad = forbidden_names(names, self.private_names)
        if bad:
            raise KitError(f"site {site} sent private data to the server: {bad[:5]}")

    def send(self, requests: dict[str, RecordDict], message_type: str, group: str
             ) -> dict[str, Message | SiteFailed]:
        return exchange(self.grid, self.sites, requests, message_type, group,
                        float(self.settings["round-timeout"]),
                        on_reply=lambda site, reply: self.check_reply(group, site, reply))

    # -- round 0: the heads' input standardization ---------------------------------------
    def head_moments(self, clients: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """Every training site's feature moments (``query.head_moments``)."""
        requests = {name: RecordDict({CONFIG: self.instructions(0)}) for name in clients}
        replies = self.send(requests, HEAD_MOMENTS, "0")
        moments = {}
        for name, reply in replies.items():
            if isinstance(reply, SiteFailed):
                raise KitError(f"round 0 (head statistics) failed: {reply}")
            moments[name] = record_to_payload(reply.content[ARRAYS])
        return moments

    # -- training -------------------------------------------------------------------------
    def prefetch_train(self, round_idx: int, state: dict[str, Any], clients: list[str]) -> None:
        """Send round ``round_idx`` to every site the loop will ask (not the dropped ones)."""
        from duallora.federated.loop import dropped_clients

        dropped = dropped_clients(self.config, round_idx, clients)
        extra = {}
        if self.settings["dp-noise-multiplier"] > 0:
            extra[CLIPPING_NORM_KEY] = float(self.settings["dp-clipping-norm"])
        requests = {}
        for name in clients:
            if name in dropped:
                continue
            requests[name] = RecordDict({
                ARRAYS: payload_to_record(state["global"]),
                CONFIG: self.instructions(round_idx,
                                          **{"private-round":
                                             ref_round(state["private"].get(name))}, **extra)})
        replies = self.send(requests, MessageType.TRAIN, str(round_idx))
        self.train_results = {name: self._update(round_idx, reply)
                              for name, reply in replies.items()}

    def _update(self, round_idx: int, reply: Message | SiteFailed) -> Any:
        from duallora.federated.client import ClientUpdate

        if isinstance(reply, SiteFailed):
            return reply
        instructions = reply.content[CONFIG]
        if "error" in instructions:
            return remote_exception(str(instructions["error-type"]), str(instructions["error"]))
        metrics = dict(reply.content[METRICS])
        n_examples = int(metrics.pop(NUM_EXAMPLES))
        return ClientUpdate(record_to_payload(reply.content[ARRAYS]), n_examples,
                            {k: float(v) for k, v in metrics.items()}, private_ref(round_idx))

    def train(self, model: Any, received: Any, private: Any, data: Any, config: Any,
              round_idx: int) -> Any:
        """``train_client`` as the loop calls it: the site's answer, fetched beforehand."""
        if data.name not in self.train_results:
            raise KitError(f"round {round_idx}: the loop asked site {data.name} for a round "
                           "that was not sent to it")
        result = self.train_results.pop(data.name)
        if isinstance(result, Exception):
            raise result
        return result

    # -- evaluation -----------------------------------------------------------------------
    def prefetch_evaluations(self, group: str, plan: dict[str, list[dict[str, Any]]]) -> None:
        """``plan[site]``: requests ``{split, global_only, received, private, export}``."""
        requests = {}
        for name, items in plan.items():
            content = RecordDict()
            payload_ids: dict[int, int] = {}
            wire = []
            for item in items:
                received = item["received"]
                if received is not None and id(received) not in payload_ids:
                    payload_ids[id(received)] = len(payload_ids)
                    content[f"payload-{payload_ids[id(received)]}"] = payload_to_record(received)
                wire.append({"split": item["split"], "global-only": item["global_only"],
                             "payload": payload_ids.get(id(received), -1),
                             "private-round": ref_round(item["private"]),
                             "export": bool(item.get("export", False))})
            content[CONFIG] = self.instructions(int(group) if group.isdigit() else 0,
                                                requests=json.dumps(wire))
            requests[name] = content
        replies = self.send(requests, MessageType.EVALUATE, group)
        from duallora.federated.client import Predictions

        for name, reply in replies.items():
            if isinstance(reply, SiteFailed):
                raise KitError(f"evaluation ({group}) failed: {reply}")
            answers = reply.content[PREDICTIONS]
            for index, item in enumerate(plan[name]):
                preds = Predictions(
                    [str(s) for s in answers[f"r{index}-ids"]],
                    np.asarray(answers[f"r{index}-labels"], dtype=np.int64),
                    np.asarray(answers[f"r{index}-probs"], dtype=np.float32))
                key = (name, item["split"], bool(item["global_only"]))
                self.eval_results[key] = (item["received"], item["private"], preds)

    def evaluate(self, model: Any, received: Any, private: Any, data: Any, split: str,
                 config: Any, global_only: bool = False) -> Any:
        """``evaluate_client`` as the loop calls it: the site's predictions, fetched before."""
        key = (data.name, split, bool(global_only))
        if key not in self.eval_results:
            raise KitError(f"the loop asked site {data.name} for {split} predictions "
                           f"(global_only={global_only}) that were not requested from it")
        sent, sent_private, preds = self.eval_results.pop(key)
        same_payload = (sent is None) == (received is None) and (
            received is None or (sorted(sent) == sorted(received)
                                 and all(torch.equal(sent[k], received[k]) for k in sent)))
        if not same_payload or ref_round(sent_private) != ref_round(private):
            raise KitError(f"site {data.name}: {split} predictions were computed from other "
                           "weights than the loop asks for")
        return preds


def validation_plan(state: dict[str, Any], strategy: Any, clients: list[str]
                    ) -> dict[str, list[dict[str, Any]]]:
    """The requests ``validate_round`` will make (same conditions, same order)."""
    plan: dict[str, list[dict[str, Any]]] = {}
    for name in clients:
        if name not in state["private"] and strategy.private:
            continue
        private = state["private"].get(name)
        items = [{"split": "val", "global_only": False, "received": state["global"],
                  "private": private}]
        if strategy.has_global_model and strategy.federated:
            items.append({"split": "val", "global_only": True, "received": state["global"],
                          "private": None})
        plan[name] = items
    return plan


def final_plan(state: dict[str, Any], strategy: Any, vendors: list[str], holdout: str | None
               ) -> dict[str, list[dict[str, Any]]]:
    """The requests ``finish`` will make: each site's best personal model on its test split
    (and, there, the export of its own adapter), and the best global model everywhere."""
    plan: dict[str, list[dict[str, Any]]] = {}
    for vendor in vendors:
        best = state["best"].get(vendor)
        if best is not None:
            plan.setdefault(vendor, []).append(
                {"split": "test", "global_only": False, "received": best["received"],
                 "private": best["private"], "export": True})
    best_global = state["best_global"]
    if strategy.has_global_model and best_global is not None:
        for vendor in [*vendors, *([holdout] if holdout else [])]:
            plan.setdefault(vendor, []).append(
                {"split": "test", "global_only": True, "received": best_global["payload"],
                 "private": None})
    return plan


def site_stub(name: str) -> Any:
    """A ``ClientData`` that only carries the site's name: the data stay on the site."""
    from duallora.federated.cohort import ClientData

    return ClientData(name, {}, None, [name])


def export_global_only(folder: Path, model: Any, state: dict[str, Any]) -> None:
    """The core's exporter for what the server has: the selected global model (sites export
    their private parts themselves)."""
    from duallora.federated.export import export_final_models

    export_final_models(folder, model, {**state, "best": {}})


def run_key_for(rundir: Any, resume: bool) -> str:
    """A name for this run in every site's state folder; kept in the run dir for --resume."""
    info_path = rundir.root / "flower" / "flower.json"
    if resume and info_path.is_file():
        return str(json.loads(info_path.read_text())["run-key"])
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def run_flower_training(grid: Grid, config: Any, settings: dict[str, Any]) -> Path:
    """The in-process loop's rounds, with every site's work done on its SuperNode."""
    from tqdm.auto import tqdm

    from duallora.federated.client_model import build_client_model
    from duallora.federated.head_norm import setup_head_norm
    from duallora.federated.loop import (
        finish,
        initial_state,
        run_round,
        send_logged,
        validate_round,
    )
    from duallora.federated.prepare import FederatedCohort
    from duallora.federated.rundir import RunDir
    from duallora.federated.strategies import get_strategy

    if not settings["out-dir"]:
        raise KitError("run config out-dir is empty: say where the server writes the run")
    rundir = RunDir(Path(str(settings["out-dir"])))
    resume = bool(settings["resume"])
    if resume and rundir.config.is_file():
        config = rundir.read_config()
    config.validate()
    strategy = get_strategy(config.strategy, config.head)
    if not strategy.federated:
        raise KitError(f"strategy {strategy.name} has no server; run it with duallora train")
    rundir.prepare(resume=resume, overwrite=bool(settings["overwrite"]))
    flower_dir = rundir.root / "flower"
    flower_dir.mkdir(parents=True, exist_ok=True)
    run_key = run_key_for(rundir, resume)
    if not resume:  # a fresh run (or --overwrite) starts these logs empty
        for stale in ("wire.jsonl", "server.log", FINISHED):
            (flower_dir / stale).unlink(missing_ok=True)
    log_path = flower_dir / "server.log"

    def log(line: str) -> None:
        with log_path.open("a") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    started = time.perf_counter()
    model = build_client_model(config, strategy)
    sites = SiteDirectory(grid, run_key, log=log)
    sites.wait_for(None, int(settings["num-clients"]) or config.min_clients,
                   float(settings["node-wait-timeout"]))
    holdout = config.holdout_vendor or None
    if holdout:
        raise KitError("holdout-vendor is not supported over Flower (a site that only "
                       "evaluates); run it with duallora train")
    vendors = sorted(sites.by_name)
    trainers = [name for name in vendors if int(sites.info[name].get("n-train", 0)) > 0]
    if trainers != vendors:
        raise KitError(f"sites {sorted(set(vendors) - set(trainers))} have no training "
                       "subjects; over Flower every site trains")
    cohort = FederatedCohort({name: site_stub(name) for name in trainers},
                             {name: site_stub(name) for name in vendors},
                             site_stub(holdout) if holdout else None)
    (flower_dir / "flower.json").write_text(json.dumps(
        {"run-key": run_key, "sites": vendors, "trainers": trainers, "holdout": holdout,
         "settings": settings}, indent=2, sort_keys=True) + "\n")
    config_on_disk = json.loads(config.to_json())
    config_on_disk["data"] = ""  # every site reads its own data folder
    from duallora.federated.config import TrainConfig

    rundir.write_config(TrainConfig.from_dict(config_on_disk))
    state = rundir.load_checkpoint() if resume else None
    if state is None:
        state = initial_state(model, cohort)
    remote = RemoteSites(grid, sites, config, strategy, list(model.private_names), settings,
                         flower_dir / "wire.jsonl")
    aggregator: Any = strategy
    if settings["dp-noise-multiplier"] > 0:
        aggregator = GaussianNoiseOnAggregate(strategy, float(settings["dp-noise-multiplier"]),
                                              float(settings["dp-clipping-norm"]), config.seed)
    # Round 0 (as in-process): pooled statistics for the heads' input standardization; asked
    # again on resume (same numbers), logged in comm.jsonl only the first time.
    fresh = state["round"] == 0 and not state["comm"]
    if config.head_norm:
        moments = remote.head_moments(trainers)

        def send_round0(payload: Any, name: str, direction: str) -> Any:
            return send_logged(state, payload, 0, name, direction)

        state["head_norm"] = setup_head_norm(config, strategy, model, cohort,
                                             send=send_round0 if fresh else None,
                                             moments_of=moments.__getitem__)
        remote.head_norm = state["head_norm"].get("global")
    timing: dict[str, Any] = {"rounds": {}, "setup_seconds": time.perf_counter() - started}
    bar = tqdm(disable=True)
    if not state.get("finished"):
        for round_idx in range(state["round"] + 1, config.rounds + 1):
            round_start = time.perf_counter()
            remote.prefetch_train(round_idx, state, trainers)
            if isinstance(aggregator, GaussianNoiseOnAggregate):
                aggregator.round_idx = round_idx
            run_round(round_idx, config, aggregator, model, cohort, state, bar,
                      train=remote.train)
            remote.prefetch_evaluations(str(round_idx),
                                        validation_plan(state, strategy, trainers))
            validate_round(round_idx, config, strategy, model, cohort, state,
                           evaluate=remote.evaluate)
            state["round"] = round_idx
            rundir.save_checkpoint(state)
            rundir.write_metrics(state["metrics"])
            rundir.write_comm(state["comm"])
            timing["rounds"][round_idx] = time.perf_counter() - round_start
            log(f"round {round_idx} done in {timing['rounds'][round_idx]:.1f} s")
        final_start = time.perf_counter()
        remote.prefetch_evaluations("final", final_plan(state, strategy, vendors, holdout))
        finish(config, strategy, model, cohort, state, rundir, evaluate=remote.evaluate,
               export=export_global_only)
        timing["final_seconds"] = time.perf_counter() - final_start
    timing["total_seconds"] = time.perf_counter() - started
    timing["resumed"] = resume
    timing["flower"] = True
    rounds = list(timing["rounds"].values())
    timing["mean_round_seconds"] = float(np.mean(rounds)) if rounds else math.nan
    rundir.write_json(rundir.timing, timing)
    rundir.write_json(flower_dir / FINISHED, {"run-key": run_key, "rounds": config.rounds})
    log("run finished")
    return rundir.root
