"""``FlowerSites``: the round driver's ``Sites`` interface carried out by SuperNodes.

Runs in: the ServerApp process.

Each batch the driver asks for (round-0 moments, one round of training, a set of evaluations)
becomes one message per site, all sent at once over the Flower grid (``messaging.exchange``);
the replies are checked on arrival and turned back into the core's types. The data and the
private parts stay on the sites: what the server holds of a site's private part is a
*reference* (the round whose private state to use, ``private_ref``), never tensors. A reply
that names one of the strategy's private parameters stops the run, and
``RUN_DIR/flower/wire.jsonl`` logs every name that arrived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from duallora.base.config import TrainConfig
from duallora.errors import KitError
from duallora.federated.client import ClientError, ClientUpdate, Predictions
from duallora.federated.client_model import ClientModel
from duallora.federated.export import export_final_models
from duallora.federated.last_validation import PrefetchedTests, merged_requests
from duallora.federated.serialization import Payload
from duallora.federated.sites import Capabilities, EvalRequest, TrainAnswer, TrainRequest
from duallora.federated.state import RunState
from duallora.flower.protocol import (
    ARRAYS,
    CLIPPING_NORM_KEY,
    CONFIG,
    HEAD_MOMENTS,
    HOLDOUT_KEY,
    METRICS,
    NUM_EXAMPLES,
    PREDICTIONS,
    SAME_PAYLOAD,
    SELECTION_KEY,
    VALIDATE_KEY,
    WITH_HEAD_MOMENTS,
)
from duallora.flower.server.messaging import SiteAbsent, SiteDirectory, SiteFailed, exchange
from duallora.flower.wire import (
    content_names,
    forbidden_names,
    payload_to_record,
    record_to_payload,
)

PRIVATE_REF = "site-private-round"   # the server's handle of a site's private part: a round


def private_ref(round_idx: int) -> dict[str, torch.Tensor]:
    return {PRIVATE_REF: torch.tensor(int(round_idx))}


def ref_round(private: dict[str, torch.Tensor] | None) -> int:
    """The round a private reference points to (0: the site has no private state yet)."""
    if not private:
        return 0
    if set(private) != {PRIVATE_REF}:
        raise KitError("the server holds private tensors of a site; this must never happen")
    return int(private[PRIVATE_REF])


def same_payload(first: Payload | None, second: Payload | None) -> bool:
    """Whether two payloads hold the same tensors (what a site would receive is identical)."""
    first, second = first or {}, second or {}
    return sorted(first) == sorted(second) and all(
        first[key].dtype == second[key].dtype and torch.equal(first[key], second[key])
        for key in first)


def failure_text(name: str, reply: Message | SiteFailed) -> str:
    """What a site said when it could not answer (a Flower error or an error reply)."""
    if isinstance(reply, SiteFailed):
        return str(reply)
    config = reply.content.config_records.get(CONFIG)
    if config is not None and "error-type" in config:
        return f"site {name}: {config['error-type']}: {config.get('error', '')}"
    return f"site {name}: the reply holds no answer"


class RemoteError(RuntimeError):
    """A site's ClientApp raised; re-raised on the server under the site's exception name."""


def remote_exception(type_name: str, text: str) -> Exception:
    """An exception whose class name is the site's, so the driver's event log reads the same."""
    if type_name == ClientError.__name__:
        return ClientError(text)
    return type(type_name, (RemoteError,), {})(text)


def plain_instructions(run_key: str, config: TrainConfig, round_idx: int) -> dict[str, Any]:
    """What every request's config holds: the round, the run key and the run's settings."""
    return {"round": round_idx, "run-key": run_key, "train-config": config.to_json()}


def ask_moments_with_hello(directory: SiteDirectory, config: TrainConfig,
                           holdout: str | None) -> None:
    """Let the hello that tells the server who a site is also carry round 0's request, so
    each training site sends its head moments with its answer: one message fewer per site
    and run (``site.handlers.hello``). The moments are the ones the plain request gives."""
    if config.head_norm:
        directory.hello_config = {**plain_instructions(directory.run_key, config, 0),
                                  WITH_HEAD_MOMENTS: True, HOLDOUT_KEY: holdout or ""}


@dataclass
class FlowerSites:
    """The sites of a Flower run, known by name through ``SiteDirectory``."""

    grid: Grid
    directory: SiteDirectory
    config: TrainConfig
    model: ClientModel
    trainers: list[str]
    vendors: list[str]
    holdout: str | None
    wire_log: Path
    round_timeout: float
    clipping_norm: float | None = None     # set: sites clip their update (central DP)
    site_wait: float = 0.0                 # > 0: go on without a site away for that long
    head_norm: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    transport: str = "flower"
    # the driver sends the validation of round r with the training of round r + 1, and the
    # last validation with the final test (``validate_then_test``): one message per site
    capabilities: ClassVar[Capabilities] = Capabilities(validates_with_next_round=True,
                                              validates_with_final_test=True)
    prefetched: PrefetchedTests = field(default_factory=PrefetchedTests, repr=False)

    # -- messages -------------------------------------------------------------------------
    def instructions(self, round_idx: int, **extra: Any) -> ConfigRecord:
        values = plain_instructions(self.directory.run_key, self.config, round_idx)
        if self.head_norm is not None:
            values.update({f"head-norm-{key}": [float(v) for v in self.head_norm[key].flatten()]
                           for key in ("mean", "std")})
        values.update(extra)
        return ConfigRecord(values)

    def check_reply(self, group: str, site: str, reply: Message) -> None:
        """Log what arrived and stop the run if any private parameter did."""
        names = content_names(reply.content)
        with self.wire_log.open("a") as handle:
            handle.write(json.dumps({"group": group, "site": site,
                                     "type": reply.metadata.message_type,
                                     "names": names}) + "\n")
        bad = forbidden_names(names, self.model.private_names)
        if bad:
            raise KitError(f"site {site} sent private data to the server: {bad[:5]}")

    def send(self, requests: dict[str, RecordDict], message_type: str | dict[str, str],
             group: str) -> dict[str, Message | SiteFailed]:
        return exchange(self.grid, self.directory, requests, message_type, group,
                        self.round_timeout,
                        on_reply=lambda site, reply: self.check_reply(group, site, reply),
                        site_wait=self.site_wait)

    # -- the Sites interface ----------------------------------------------------------------
    def moments(self, names: list[str]) -> dict[str, Payload]:
        """Round 0: the moments each site sent with its hello (``ask_moments_with_hello``),
        and asked for now from any site whose hello came without them."""
        moments = {}
        for name in names:
            hello = self.directory.hello_replies.get(name)
            if hello is not None and ARRAYS in hello.content:
                self.check_reply("0", name, hello)
                moments[name] = record_to_payload(hello.content[ARRAYS])
        self.directory.hello_config = {}  # a site's later hello (a restart) asks nothing more
        requests = {name: RecordDict({CONFIG: self.instructions(0)})
                    for name in names if name not in moments}
        for name, reply in self.send(requests, HEAD_MOMENTS, "0").items():  # {}: no message
            if isinstance(reply, SiteFailed) or ARRAYS not in reply.content:
                raise KitError(f"round 0 (head statistics) failed: {failure_text(name, reply)}")
            moments[name] = record_to_payload(reply.content[ARRAYS])
        return {name: moments[name] for name in names}  # the order the pooling sums in

    def set_head_norm(self, owners: dict[str, Payload]) -> None:
        if set(owners) != {"global"}:
            raise KitError("over Flower the head standardization is pooled by the server")
        self.head_norm = owners["global"]

    def _train_message(self, round_idx: int, request: TrainRequest, **extra: Any
                       ) -> RecordDict:
        if self.clipping_norm is not None:
            extra[CLIPPING_NORM_KEY] = self.clipping_norm
        return RecordDict({
            ARRAYS: payload_to_record(request.received or {}),
            CONFIG: self.instructions(round_idx, **{"private-round": ref_round(request.private)},
                                      **extra)})

    def train(self, round_idx: int, requests: dict[str, TrainRequest]) -> dict[str, TrainAnswer]:
        messages = {name: self._train_message(round_idx, request)
                    for name, request in requests.items()}
        replies = self.send(messages, MessageType.TRAIN, str(round_idx))
        return {name: self._update(round_idx, reply) for name, reply in replies.items()}

    def train_after_validation(self, group: str, plan: dict[str, list[EvalRequest]],
                               round_idx: int, requests: dict[str, TrainRequest]
                               ) -> tuple[dict[str, list[Predictions]], dict[str, TrainAnswer]]:
        """The validation ``plan`` of round ``group`` and the training of ``round_idx`` as one
        message per site: a site validates first, with the payload it then trains from.

        A site that only validates (it misses this round) gets an evaluation message; one
        whose validation payload differs from its training payload (never, with the driver's
        requests) too, so no site ever gets more than one message here."""
        messages: dict[str, RecordDict] = {}
        types: dict[str, str] = {}
        for name in sorted(set(plan) | set(requests)):
            items, request = plan.get(name), requests.get(name)
            if request is not None and (not items or all(
                    same_payload(item.received, request.received) for item in items)):
                extra = {VALIDATE_KEY: json.dumps([self._eval_wire(item, SAME_PAYLOAD)
                                                   for item in items])} if items else {}
                messages[name] = self._train_message(round_idx, request, **extra)
                types[name] = MessageType.TRAIN
            elif request is None:
                messages[name] = self._evaluation_message(group, items or [])
                types[name] = MessageType.EVALUATE
            else:  # a different payload: keep the two apart (validation first)
                raise KitError(f"site {name}: the validation of round {group} and the "
                               f"training of round {round_idx} use different payloads")
        replies = self.send(messages, types, str(round_idx))
        val_answers = {name: self._predictions(group, name, replies[name], len(plan[name]))
                       for name in plan if not isinstance(replies[name], SiteAbsent)}
        updates = {name: self._update(round_idx, replies[name]) for name in requests}
        return val_answers, updates

    def _update(self, round_idx: int, reply: Message | SiteFailed) -> TrainAnswer:
        if isinstance(reply, SiteFailed):
            return reply
        instructions = reply.content[CONFIG]
        if "error" in instructions:
            return remote_exception(str(instructions["error-type"]), str(instructions["error"]))
        metrics = dict(reply.content[METRICS])
        n_examples = int(metrics.pop(NUM_EXAMPLES))
        return ClientUpdate(record_to_payload(reply.content[ARRAYS]), n_examples,
                            {k: float(v) for k, v in metrics.items()}, private_ref(round_idx))

    def evaluate(self, group: str, requests: dict[str, list[EvalRequest]]
                 ) -> dict[str, list[Predictions]]:
        found: dict[str, list[Predictions]] = {}
        if group == "final":  # answered with the last validation (validate_then_test)
            found, requests = self.prefetched.take(requests)
            if not requests:
                return found
        messages = {name: self._evaluation_message(group, items)
                    for name, items in requests.items()}
        replies = self.send(messages, MessageType.EVALUATE, group)
        return found | {name: self._predictions(group, name, reply, len(requests[name]))
                        for name, reply in replies.items() if not isinstance(reply, SiteAbsent)}

    def validate_then_test(self, group: str, plan: dict[str, list[EvalRequest]],
                           kept: dict[str, list[tuple[str, EvalRequest]]],
                           last: dict[str, list[tuple[str, EvalRequest]]],
                           kept_scores: dict[str, float | None], rule: str
                           ) -> dict[str, list[Predictions]]:
        """The last validation (``plan``, round ``group``) and every final test the two
        candidate plans can ask for, one message per site (``federated.last_validation``):
        returns the validation answers and keeps the test answers for ``evaluate("final")``."""
        finals: dict[str, list[tuple[EvalRequest, str | None]]] = {}
        messages: dict[str, RecordDict] = {}
        for name in sorted(set(plan) | set(kept) | set(last)):
            validation = plan.get(name, [])
            finals[name] = merged_requests([item for _, item in kept.get(name, [])],
                                           [item for _, item in last.get(name, [])])
            conditional = any(when is not None for _, when in finals[name])
            selection = ({"rule": rule, "kept-score": kept_scores.get(name), "validation": 0}
                         if conditional else None)
            messages[name] = self._evaluation_message(
                "final", [*validation, *(item for item, _ in finals[name])],
                whens=[None] * len(validation) + [when for _, when in finals[name]],
                selection=selection)
        replies = self.send(messages, MessageType.EVALUATE, "final")
        answers: dict[str, list[Predictions]] = {}
        for name, reply in replies.items():
            if isinstance(reply, SiteAbsent):
                continue
            if isinstance(reply, SiteFailed) or PREDICTIONS not in reply.content:
                raise KitError(f"validation ({group}) and final test failed: "
                               f"{failure_text(name, reply)}")
            content = reply.content[PREDICTIONS]
            count = len(plan.get(name, []))
            if name in plan:
                answers[name] = [self._prediction(content, i) for i in range(count)]
            for offset, (item, _) in enumerate(finals[name]):
                if f"r{count + offset}-ids" in content:  # the site made this prediction
                    self.prefetched.add(name, item, self._prediction(content, count + offset))
        return answers

    @staticmethod
    def _prediction(content: ConfigRecord, index: int) -> Predictions:
        return Predictions([str(s) for s in content[f"r{index}-ids"]],
                           np.asarray(content[f"r{index}-labels"], dtype=np.int64),
                           np.asarray(content[f"r{index}-probs"], dtype=np.float32))

    @classmethod
    def _predictions(cls, group: str, name: str, reply: Message | SiteFailed, count: int
                     ) -> list[Predictions]:
        if isinstance(reply, SiteFailed) or PREDICTIONS not in reply.content:
            raise KitError(f"evaluation ({group}) failed: {failure_text(name, reply)}")
        return [cls._prediction(reply.content[PREDICTIONS], i) for i in range(count)]

    @staticmethod
    def _eval_wire(item: EvalRequest, payload: int, when: str | None = None) -> dict[str, Any]:
        wire = {"split": item.split, "global-only": item.global_only, "payload": payload,
                "private-round": ref_round(item.private), "export": item.export,
                "finetune": item.finetune}
        if when is not None:  # made only if the site's own selection picks this candidate
            wire["when"] = when
        return wire

    def _evaluation_message(self, group: str, items: list[EvalRequest],
                            whens: list[str | None] | None = None,
                            selection: dict[str, Any] | None = None) -> RecordDict:
        """One message for a site's requests; a payload used by several travels once.
        ``whens``/``selection``: conditional requests and the rule the site decides them by
        (``validate_then_test``)."""
        content = RecordDict()
        payload_ids: dict[int, int] = {}
        wire = []
        for item, when in zip(items, whens or [None] * len(items), strict=True):
            if item.received is not None and id(item.received) not in payload_ids:
                payload_ids[id(item.received)] = len(payload_ids)
                content[f"payload-{payload_ids[id(item.received)]}"] = \
                    payload_to_record(item.received)
            wire.append(self._eval_wire(item, payload_ids.get(id(item.received), -1), when))
        extra = {"requests": json.dumps(wire)}
        if selection is not None:
            extra[SELECTION_KEY] = json.dumps(selection)
        content[CONFIG] = self.instructions(int(group) if group.isdigit() else 0, **extra)
        return content

    def export(self, folder: Path, state: RunState) -> None:
        """What the server holds: the selected global model (each site exported its own
        private part into its state folder with the final evaluation)."""
        export_final_models(folder, self.model, state, include_sites=False)
