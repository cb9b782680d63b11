"""The Flower ClientApp: one site (vendor) trains and evaluates with the federated core.

A SuperNode is one site. Its node config says who it is and where its files are::

    client-name = "Siemens"          # the vendor this site holds (metadata.csv's vendor column)
    data-dir    = "/data/harmonized"  # the site's harmonized cohort (python -m data_prep harmonize)
    state-dir   = "/data/duallora"    # node-local: private adapters, prefix cache, event log
    device      = "cuda:1"            # optional: this site's own GPU (overrides the run's
                                      # --device; precision stays the run's, one protocol)

Flower starts a fresh ClientApp process for every message, so each handler builds the model
and loads the site's data with the federated core (``build_client_model``, ``prepare_cohort``;
the prefix cache under ``state-dir`` makes the second time cheap) and then calls exactly what
the in-process loop calls (``train_client``, ``evaluate_client``). The private payload returned
by ``train_client`` is kept in ``context.state`` and in ``state-dir`` (see ``node_state``); the
reply carries only the strategy's shared tensors.

Message types: ``query.hello`` (who are you, how many training subjects),
``query.head_moments`` (round 0: count, sum and sum of squares of the site's training features,
for the pooled standardization in front of the heads; see ``federated.head_norm``), ``train``
(one round) and ``evaluate`` (a list of prediction requests; the final one also exports the
site's own adapter into ``state-dir``). Every train/evaluate message carries the pooled
``head-norm-mean``/``head-norm-std``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod

from duallora.errors import KitError
from duallora.flower.node_state import (
    NodeStateStore,
    PrivateState,
    payload_digest,
    private_for_round,
    remember,
)
from duallora.flower.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    PREDICTIONS,
    payload_to_record,
    record_to_payload,
)

CLIPPING_NORM_KEY = "clipping_norm"  # the key Flower's fixedclipping_mod reads
NODE_KEYS = ("client-name", "data-dir", "state-dir")

app = ClientApp()


@dataclass(frozen=True)
class Site:
    """Who this SuperNode is, from its node config."""

    name: str
    data_dir: Path
    state_dir: Path
    device: str = ""  # node config ``device`` (optional): overrides the run's --device

    @classmethod
    def from_context(cls, context: Context) -> Site:
        node = context.node_config
        missing = [key for key in NODE_KEYS if not str(node.get(key, "")).strip()]
        if missing:
            raise KitError(f"SuperNode node config lacks {', '.join(missing)} (start it with "
                           "--node-config 'client-name=\"Siemens\" data-dir=\"...\" "
                           "state-dir=\"...\"')")
        return cls(str(node["client-name"]), Path(str(node["data-dir"])),
                   Path(str(node["state-dir"])), str(node.get("device", "")).strip())


def site_config(site: Site, instructions: ConfigRecord) -> Any:
    """The server's TrainConfig with this site's own data folder and prefix-cache folder.

    A site's folder holds only its own vendor, so the hold-out setting only concerns the
    hold-out site itself (which then only evaluates); every other site drops it.
    """
    from duallora.federated.config import TrainConfig

    values = json.loads(str(instructions["train-config"]))
    values["data"] = str(site.data_dir)
    values["cache_dir"] = str(site.state_dir / "prefix-cache")
    if site.device:
        values["device"] = site.device
    if values.get("holdout_vendor") != site.name:
        values["holdout_vendor"] = ""
    return TrainConfig.from_dict(values)


def head_norm_from(instructions: ConfigRecord, embed_dim: int) -> Any:
    """The pooled head standardization the server sent (None when the run has none)."""
    import torch

    if "head-norm-mean" not in instructions:
        return None
    return {key: torch.tensor(list(instructions[f"head-norm-{key}"]),
                              dtype=torch.float32).reshape(2, embed_dim)
            for key in ("mean", "std")}


def load_site(site: Site, config: Any, instructions: ConfigRecord | None = None
              ) -> tuple[Any, Any]:
    """The site's ``ClientModel`` and ``ClientData`` (its vendor, or the held-out vendor),
    with the server's head standardization when ``instructions`` carry one."""
    from duallora.federated.client_model import build_client_model
    from duallora.federated.prepare import prepare_cohort

    model = build_client_model(config)
    cohort = prepare_cohort(config, model, evaluation_only=bool(config.holdout_vendor))
    data = None
    if site.name in cohort.vendors:
        data = cohort.vendors[site.name]
    elif cohort.holdout is not None and cohort.holdout.name == site.name:
        data = cohort.holdout
    if data is not None:
        if instructions is not None:
            data.head_norm = head_norm_from(instructions, int(model.core.config.embed_dim))
        return model, data
    raise KitError(f"node config client-name={site.name!r}: {site.data_dir} holds vendors "
                   f"{sorted(cohort.vendors)}")


def store_for(site: Site, instructions: ConfigRecord) -> NodeStateStore:
    return NodeStateStore(site.state_dir, str(instructions["run-key"]))


def error_reply(msg: Message, site_name: str, err: Exception) -> Message:
    """A failed round, reported as data (type and text), so the server logs it exactly like
    the in-process loop logs a failing client."""
    return Message(RecordDict({CONFIG: ConfigRecord({
        "client-name": site_name, "error-type": type(err).__name__, "error": str(err)})}),
        reply_to=msg)


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Tell the server which site this node is and how many training subjects it has.

    Reads only ``metadata.csv`` (fast): the server needs the count before round 1 to know
    which sites train (as the in-process loop, it leaves out sites without training data).
    """
    from duallora.data import read_metadata

    site = Site.from_context(context)
    frame = read_metadata(site.data_dir)
    mine = frame[frame["vendor"].astype(str) == site.name]
    if mine.empty:
        raise KitError(f"node config client-name={site.name!r}: {site.data_dir} holds vendors "
                       f"{sorted(frame['vendor'].astype(str).unique())}")
    return Message(RecordDict({CONFIG: ConfigRecord({
        "client-name": site.name, "n-train": int((mine["split"] == "train").sum())})}),
        reply_to=msg)


@app.query("head_moments")
def head_moments(msg: Message, context: Context) -> Message:
    """Round 0: this site's training-feature moments (count, sum, sum of squares), computed
    with the shared initial model; the server pools them into the heads' standardization."""
    from duallora.federated.head_norm import client_moments

    site = Site.from_context(context)
    instructions = msg.content[CONFIG]
    config = site_config(site, instructions)
    model, data = load_site(site, config)
    moments = client_moments(model, data.splits["train"], data.from_block,
                             config.eval_batch_size)
    return Message(RecordDict({ARRAYS: payload_to_record(moments),
                               CONFIG: ConfigRecord({"client-name": site.name})}),
                   reply_to=msg)


def optional_clipping(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``fixedclipping_mod`` when the server asks for DP clipping, else a no-op."""
    instructions = msg.content.config_records.get(CONFIG)
    if instructions is not None and CLIPPING_NORM_KEY in instructions:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


@app.train(mods=[optional_clipping])
def train(msg: Message, context: Context) -> Message:
    """One round: start from the private state the server names, train, keep the new private
    state on site, upload the shared tensors."""
    from duallora.federated.client import train_client

    site = Site.from_context(context)
    instructions = msg.content[CONFIG]
    round_idx = int(instructions["round"])
    store = store_for(site, instructions)
    try:
        config = site_config(site, instructions)
        model, data = load_site(site, config, instructions)
        base = private_for_round(context.state, store, int(instructions["private-round"]))
        received = record_to_payload(msg.content[ARRAYS])
        update = train_client(model, received, base.payload or None, data, config, round_idx)
    except Exception as err:  # a failing site must not stop the federation (as in-process)
        store.log_event(kind="train", round=round_idx, error=f"{type(err).__name__}: {err}")
        return error_reply(msg, site.name, err)
    store.save(round_idx, update.private)
    remember(context.state, store.folder.name, round_idx, update.private)
    store.log_event(kind="train", round=round_idx, base_round=base.round, base_source=base.source,
                    base_digest=payload_digest(base.payload),
                    new_digest=payload_digest(update.private))
    metrics = {key: float(value) for key, value in update.metrics.items()}
    metrics[NUM_EXAMPLES] = int(update.n_examples)
    return Message(RecordDict({
        ARRAYS: payload_to_record(update.upload),
        METRICS: MetricRecord(metrics),
        CONFIG: ConfigRecord({"client-name": site.name}),
    }), reply_to=msg)


def _payloads(content: RecordDict) -> dict[int, Any]:
    return {int(name.split("-", 1)[1]): record_to_payload(record)
            for name, record in content.array_records.items() if name.startswith("payload-")}


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Answer each prediction request: ``split``, ``global-only``, which payload and which
    round's private state. Returns subject ids, labels and probabilities for the run directory."""
    from duallora.federated.client import evaluate_client, finetune_client

    site = Site.from_context(context)
    instructions = msg.content[CONFIG]
    store = store_for(site, instructions)
    config = site_config(site, instructions)
    model, data = load_site(site, config, instructions)
    payloads = _payloads(msg.content)
    requests = json.loads(str(instructions["requests"]))
    answers: dict[str, Any] = {}
    for index, request in enumerate(requests):
        received = payloads.get(int(request["payload"]))
        private: PrivateState | None = None
        if not request["global-only"]:
            private = private_for_round(context.state, store, int(request["private-round"]))
        own = private.payload if private else None
        if request.get("finetune"):  # fedavg_lora_ft: the fine-tuned model stays on the site
            received = finetune_client(model, received, own, data, config)
        preds = evaluate_client(model, received, own, data, str(request["split"]), config,
                                global_only=bool(request["global-only"]))
        answers[f"r{index}-ids"] = list(preds.subject_ids)
        answers[f"r{index}-labels"] = [int(v) for v in preds.labels]
        answers[f"r{index}-probs"] = [float(v) for v in preds.probs]
        store.log_event(kind="evaluate", round=int(instructions.get("round", 0)),
                        split=str(request["split"]), global_only=bool(request["global-only"]),
                        base_round=private.round if private else None,
                        base_source=private.source if private else None)
        if request.get("export") and private is not None:
            export_site_model(store.folder / "final", model, received, private.payload,
                              finetuned_site=site.name if request.get("finetune") else None)
    return Message(RecordDict({
        PREDICTIONS: ConfigRecord(answers),
        CONFIG: ConfigRecord({"client-name": site.name}),
    }), reply_to=msg)


def export_site_model(folder: Path, model: Any, received: Any, private: Any,
                      finetuned_site: str | None = None) -> None:
    """The site's selected private payload and its private adapter (if any) as a PEFT
    folder: what ``export_final_models`` writes per client in-process, kept on the site.
    ``finetuned_site``: ``received`` is this site's fine-tuned model (``fedavg_lora_ft``), written
    as ``finetuned/<site>.safetensors`` and ``peft/<site>/global/``."""
    from safetensors.torch import save_file

    from duallora.federated.adapters import save_adapters
    from duallora.federated.client import split_private
    from duallora.federated.export import export_finetuned

    private = split_private(private)[0]  # parameters only, not optimizer state
    folder.mkdir(parents=True, exist_ok=True)
    if finetuned_site is not None:
        export_finetuned(folder, model, finetuned_site, received)
    if private:
        save_file({k: v.contiguous() for k, v in private.items()},
                  str(folder / "private.safetensors"))
    adapter = model.strategy.private_adapter
    if adapter in model.strategy.adapters:
        model.set_state(received, private)
        save_adapters(model.module, folder / "peft", [adapter])
        model.set_state(None, None)

