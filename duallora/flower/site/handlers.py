"""What a site does with each message of a run: the kit's work, inside the long-lived worker.

Runs in: the site worker process.

The relay (``client_app``) forwards every message to the site worker (``worker``), which
calls ``handle``. The work is exactly what the in-process loop calls (``train_client``,
``evaluate_client``, ``client_moments``) on the site's own data; the model and the cohort are
built once per run (``SiteCache``), so a round costs the computation, not a fresh Python with
torch, the model and the cohort.

Message types: ``query.hello`` (who are you, how many training subjects; the first hello of a
run also carries round 0, see ``hello``), ``query.head_moments``
(round 0: count, sum and sum of squares of the site's training features, for the pooled
standardization in front of the heads; see ``federated.head_norm``), ``train`` (one round; it
may carry, under ``validate``, the validation of the previous round with the same global
payload, done first) and ``evaluate`` (a list of prediction requests; the final one also exports
the site's own adapter into ``state-dir``). Every train/evaluate message carries the pooled
``head-norm-mean``/``head-norm-std``.

Private state stays on the site: in the worker's memory (``memory``, one ``RecordDict`` per
run) and in ``state-dir`` (``node_state``), so a restarted worker resumes from its folder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, MessageType, MetricRecord, RecordDict

from duallora.errors import KitError
from duallora.flower.protocol import (
    ARRAYS,
    CONFIG,
    HEAD_MOMENTS,
    HELLO,
    HOLDOUT_KEY,
    METRICS,
    NUM_EXAMPLES,
    PREDICTIONS,
    SAME_PAYLOAD,
    SELECTION_KEY,
    VALIDATE_KEY,
    WITH_HEAD_MOMENTS,
)
from duallora.flower.site.node_state import (
    NodeStateStore,
    PrivateState,
    payload_digest,
    private_for_round,
    remember,
)
from duallora.flower.wire import payload_to_record, record_to_payload

NODE_KEYS = ("client-name", "data-dir", "state-dir")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Site:
    """Who this site is, from its node config."""

    name: str
    data_dir: Path
    state_dir: Path
    device: str = ""  # node config ``device`` (optional): overrides the run's --device
    # node config ``cache-dir`` (optional): the prefix cache's folder, by default
    # ``state-dir/prefix-cache``; sites simulated on one machine may share one folder (their
    # entries are keyed by their own images, so none reads another's)
    cache_dir: Path | None = None

    @classmethod
    def from_node_config(cls, node: dict[str, Any]) -> Site:
        missing = [key for key in NODE_KEYS if not str(node.get(key, "")).strip()]
        if missing:
            raise KitError(f"SuperNode node config lacks {', '.join(missing)} (start it with "
                           "--node-config 'client-name=\"Siemens\" data-dir=\"...\" "
                           "state-dir=\"...\"')")
        cache = str(node.get("cache-dir", "")).strip()
        return cls(str(node["client-name"]), Path(str(node["data-dir"])),
                   Path(str(node["state-dir"])), str(node.get("device", "")).strip(),
                   Path(cache) if cache else None)


def site_config(site: Site, instructions: ConfigRecord) -> Any:
    """The server's TrainConfig with this site's own data folder and prefix-cache folder
    (``cache-dir``, else ``state-dir/prefix-cache``).

    A site's folder holds only its own vendor, so the hold-out setting only concerns the
    hold-out site itself (which then only evaluates); every other site drops it.
    """
    from duallora.base.config import TrainConfig

    values = json.loads(str(instructions["train-config"]))
    values["data"] = str(site.data_dir)
    values["cache_dir"] = str(site.cache_dir or site.state_dir / "prefix-cache")
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


def load_site(site: Site, config: Any) -> tuple[Any, Any]:
    """The site's ``ClientModel`` and ``ClientData`` (its vendor, or the held-out vendor)."""
    from duallora.federated.client_model import build_client_model
    from duallora.federated.prepare import prepare_cohort

    model = build_client_model(config)
    cohort = prepare_cohort(config, model, evaluation_only=bool(config.holdout_vendor))
    if site.name in cohort.vendors:
        return model, cohort.vendors[site.name]
    if cohort.holdout is not None and cohort.holdout.name == site.name:
        return model, cohort.holdout
    raise KitError(f"node config client-name={site.name!r}: {site.data_dir} holds vendors "
                   f"{sorted(cohort.vendors)}")


@dataclass
class SiteCache:
    """What a worker keeps between messages: per run key, the model, the data and the
    private state in memory. Built on first use, rebuilt when the run's config changes;
    only the newest ``keep`` runs stay in memory (the folders keep everything)."""

    site: Site
    keep: int = 2
    loaded: dict[str, tuple[str, Any, Any]] = field(default_factory=dict)
    memory: dict[str, RecordDict] = field(default_factory=dict)
    builds: int = 0

    def model_and_data(self, run_key: str, instructions: ConfigRecord) -> tuple[Any, Any, Any]:
        config = site_config(self.site, instructions)
        text = config.to_json()
        held = self.loaded.get(run_key)
        if held is None or held[0] != text:
            model, data = load_site(self.site, config)
            self.builds += 1
            self.loaded.pop(run_key, None)
            self.loaded[run_key] = (text, model, data)
            while len(self.loaded) > self.keep:
                old = next(iter(self.loaded))
                self.loaded.pop(old)
                self.memory.pop(old, None)
            held = self.loaded[run_key]
        _, model, data = held
        data.head_norm = head_norm_from(instructions, int(model.core.config.embed_dim))
        return config, model, data

    def state(self, run_key: str) -> RecordDict:
        return self.memory.setdefault(run_key, RecordDict())


def error_content(site_name: str, err: BaseException) -> RecordDict:
    """A failed request, reported as data (type and text), so the server logs it exactly as
    the in-process loop logs a failing client."""
    return RecordDict({CONFIG: ConfigRecord({
        "client-name": site_name, "error-type": type(err).__name__, "error": str(err)})})


def handle(message_type: str, content: RecordDict, cache: SiteCache) -> RecordDict:
    """The reply content for one message (raises on what the relay reports as an error)."""
    if message_type == HELLO:
        return hello(content, cache)
    instructions = content[CONFIG]
    if message_type == HEAD_MOMENTS:
        return head_moments(content, cache)
    if message_type == MessageType.TRAIN:
        return train(content, cache)
    if message_type == MessageType.EVALUATE:
        return evaluate(content, cache, int(instructions.get("round", 0)))
    raise KitError(f"site {cache.site.name}: unknown message type {message_type!r}")


def hello(content: RecordDict, cache: SiteCache) -> RecordDict:
    """Which site this is and how many training subjects it has (reads only metadata.csv):
    the server needs the count before round 1 to know which sites train.

    When the server asks (``WITH_HEAD_MOMENTS`` in the hello's config, which then carries
    round 0's instructions), a site that will train also answers round 0 here: its head
    moments, as ``head_moments`` gives them. That saves a message per site per run (each
    message costs a ``flwr-clientapp`` process). If the moments fail, the hello still
    answers, without them; the server then asks for them on their own and gets the error.
    """
    from duallora.data import read_metadata

    site = cache.site
    frame = read_metadata(site.data_dir)
    mine = frame[frame["vendor"].astype(str) == site.name]
    if mine.empty:
        raise KitError(f"node config client-name={site.name!r}: {site.data_dir} holds vendors "
                       f"{sorted(frame['vendor'].astype(str).unique())}")
    n_train = int((mine["split"] == "train").sum())
    reply = RecordDict({CONFIG: ConfigRecord({"client-name": site.name, "n-train": n_train})})
    asked = content[CONFIG] if CONFIG in content else ConfigRecord()
    holdout = str(asked.get(HOLDOUT_KEY, ""))
    if asked.get(WITH_HEAD_MOMENTS) and n_train > 0 and holdout != site.name:
        try:
            reply[ARRAYS] = head_moments(content, cache)[ARRAYS]
        except Exception as err:  # reported by the plain head_moments request
            logger.warning("site %s: head moments with the hello failed (%s: %s)", site.name,
                           type(err).__name__, err)
    return reply


def head_moments(content: RecordDict, cache: SiteCache) -> RecordDict:
    """Round 0: this site's training-feature moments with the shared initial model."""
    from duallora.federated.head_norm import client_moments

    instructions = content[CONFIG]
    config, model, data = cache.model_and_data(str(instructions["run-key"]), instructions)
    moments = client_moments(model, data.splits["train"], data.from_block,
                             config.eval_batch_size)
    return RecordDict({ARRAYS: payload_to_record(moments),
                       CONFIG: ConfigRecord({"client-name": cache.site.name})})


def train(content: RecordDict, cache: SiteCache) -> RecordDict:
    """One round (after the previous round's validation, when the message carries it): start
    from the private state the server names, train, keep the new private state on site,
    upload the shared tensors."""
    from duallora.federated.client import train_client

    site = cache.site
    instructions = content[CONFIG]
    run_key = str(instructions["run-key"])
    round_idx = int(instructions["round"])
    store = NodeStateStore(site.state_dir, run_key)
    reply = RecordDict()
    if VALIDATE_KEY in instructions:
        validated = evaluate(content, cache, round_idx - 1,
                             requests=json.loads(str(instructions[VALIDATE_KEY])))
        reply[PREDICTIONS] = validated[PREDICTIONS]
    memory = cache.state(run_key)
    try:
        config, model, data = cache.model_and_data(run_key, instructions)
        base = private_for_round(memory, store, int(instructions["private-round"]))
        received = record_to_payload(content[ARRAYS])
        update = train_client(model, received, base.payload or None, data, config, round_idx)
    except Exception as err:  # a failing site must not stop the federation (as in-process)
        store.log_event(kind="train", round=round_idx, error=f"{type(err).__name__}: {err}")
        failed = error_content(site.name, err)
        reply[CONFIG] = failed[CONFIG]
        return reply
    store.save(round_idx, update.private)
    remember(memory, run_key, round_idx, update.private)
    store.log_event(kind="train", round=round_idx, base_round=base.round, base_source=base.source,
                    base_digest=payload_digest(base.payload),
                    new_digest=payload_digest(update.private))
    metrics = {key: float(value) for key, value in update.metrics.items()}
    metrics[NUM_EXAMPLES] = int(update.n_examples)
    reply[ARRAYS] = payload_to_record(update.upload)
    reply[METRICS] = MetricRecord(metrics)
    reply[CONFIG] = ConfigRecord({"client-name": site.name})
    return reply


def _payloads(content: RecordDict) -> dict[int, Any]:
    payloads = {int(name.split("-", 1)[1]): record_to_payload(record)
                for name, record in content.array_records.items()
                if name.startswith("payload-")}
    if ARRAYS in content.array_records:
        payloads[SAME_PAYLOAD] = record_to_payload(content[ARRAYS])
    return payloads


def evaluate(content: RecordDict, cache: SiteCache, round_idx: int,
             requests: list[dict[str, Any]] | None = None) -> RecordDict:
    """Answer each prediction request: ``split``, ``global-only``, which payload and which
    round's private state. Returns subject ids, labels and probabilities for the run directory."""
    from duallora.federated.client import evaluate_client, finetune_client
    from duallora.federated.last_validation import LAST

    site = cache.site
    instructions = content[CONFIG]
    run_key = str(instructions["run-key"])
    store = NodeStateStore(site.state_dir, run_key)
    config, model, data = cache.model_and_data(run_key, instructions)
    memory = cache.state(run_key)
    payloads = _payloads(content)
    if requests is None:
        requests = json.loads(str(instructions["requests"]))
    selection = (json.loads(str(instructions[SELECTION_KEY]))
                 if SELECTION_KEY in instructions else None)
    takes_last: bool | None = None  # this site's own selection (the last validation + test)
    made: dict[int, Any] = {}
    answers: dict[str, Any] = {}
    for index, request in enumerate(requests):
        if request.get("when") is not None:  # a candidate's request: only the chosen one's
            if takes_last is None:
                takes_last = _takes_last(made, selection, store, round_idx)
            if (request["when"] == LAST) != takes_last:
                continue
        received = payloads.get(int(request["payload"]))
        private: PrivateState | None = None
        if not request["global-only"]:
            private = private_for_round(memory, store, int(request["private-round"]))
        own = private.payload if private else None
        if request.get("finetune"):  # fedavg_lora_ft: the fine-tuned model stays on the site
            received = finetune_client(model, received, own, data, config)
        preds = evaluate_client(model, received, own, data, str(request["split"]), config,
                                global_only=bool(request["global-only"]))
        made[index] = preds
        answers[f"r{index}-ids"] = list(preds.subject_ids)
        answers[f"r{index}-labels"] = [int(v) for v in preds.labels]
        answers[f"r{index}-probs"] = [float(v) for v in preds.probs]
        store.log_event(kind="evaluate", round=round_idx,
                        split=str(request["split"]), global_only=bool(request["global-only"]),
                        base_round=private.round if private else None,
                        base_source=private.source if private else None)
        if request.get("export") and private is not None:
            export_site_model(store.folder / "final", model, received, private.payload,
                              finetuned_site=site.name if request.get("finetune") else None)
    return RecordDict({PREDICTIONS: ConfigRecord(answers),
                       CONFIG: ConfigRecord({"client-name": site.name})})


def _takes_last(made: dict[int, Any], selection: dict[str, Any] | None,
                store: NodeStateStore, round_idx: int) -> bool:
    """Whether the last round replaces this site's selected model, decided on the site with
    the server's rule (``federated.last_validation``), from the validation made first."""
    from duallora.federated.last_validation import site_takes_last

    if selection is None or int(selection["validation"]) not in made:
        raise KitError("a conditional test request came without the validation it depends on")
    kept = selection["kept-score"]
    chosen = site_takes_last(made[int(selection["validation"])],
                             None if kept is None else float(kept), str(selection["rule"]))
    store.log_event(kind="selection", round=round_idx, rule=str(selection["rule"]),
                    takes_last_round=chosen)
    return chosen


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
