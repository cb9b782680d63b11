"""The sites of a run as the round driver sees them: one batch-shaped interface, two transports.

The driver (``federated.loop.run_federation``) decides everything that happens in a round:
who trains, what they receive, what is aggregated, what is evaluated and selected. A ``Sites``
object only carries the work out, one batch of requests per step, so that the same driver runs

- in this process (``InProcessSites``: every site's data in memory, ``train_client`` and
  ``evaluate_client`` called one site after the other), and
- over Flower (``duallora.flower.server.sites.FlowerSites``: each batch becomes one message
  per site, sent at once; the data and the private parts stay on the sites).

Private parts are *handles* (see ``federated.state``): a transport returns one with each
training answer and receives it back in later requests; the driver never looks inside.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from duallora.base.config import TrainConfig
from duallora.federated.client import (
    ClientUpdate,
    Predictions,
    evaluate_client,
    finetune_client,
    train_client,
)
from duallora.federated.client_model import ClientModel
from duallora.federated.export import export_final_models
from duallora.federated.head_norm import assign_head_norm, cohort_moments
from duallora.federated.prepare import FederatedCohort
from duallora.federated.serialization import Payload
from duallora.federated.state import RunState


@dataclass(frozen=True)
class TrainRequest:
    """Train one round from ``received`` (the global payload, as the site decoded it) on top of
    the site's private state ``private`` (a handle; None before its first successful round)."""

    received: Payload | None
    private: Any = None


@dataclass(frozen=True)
class EvalRequest:
    """Predict ``split`` with ``received`` + the private state ``private``, or with the global
    model alone (``global_only``). ``export``: this is the site's final personalized model; the
    site keeps (exports) its private part. ``finetune``: the site first fine-tunes ``received``
    (+ private) on its own training data (``client.finetune_client``, ``fedavg_lora_ft``) and
    predicts with the result, which stays on the site."""

    split: str
    received: Payload | None
    private: Any = None
    global_only: bool = False
    export: bool = False
    norm_of: str | None = None  # cross-site test: the model's own site, whose head
    #                             standardization goes with it (in-process only)
    finetune: bool = False


TrainAnswer = ClientUpdate | Exception  # an exception: the site failed this round


@dataclass(frozen=True)
class Capabilities:
    """What a transport can do beyond the basic batch calls (``Sites``): the driver asks for
    nothing else, and the numbers are the same either way (only the number of messages
    changes).

    ``validates_with_next_round``: it takes the validation of round r with the training of
    round r + 1 as one batch (``Sites.train_after_validation``). ``validates_with_final_test``
    (only together with the first): it takes the last validation with the final test
    (``Sites.validate_then_test``), under a selection rule each site can apply alone
    (``selection.SITE_DECIDED_RULES``; ``federated.last_validation``).
    """

    validates_with_next_round: bool = False
    validates_with_final_test: bool = False


class Sites(Protocol):
    """What the driver needs from the sites of a run (see the module docstring)."""

    transport: str              # "in-process" or "flower" (recorded in timing.json)
    capabilities: Capabilities  # the optional batches below that the transport offers
    trainers: list[str]         # sites that train ("pooled" for centralized), sorted
    vendors: list[str]          # vendors evaluated on their own test split, sorted
    holdout: str | None         # a vendor that never trains; only the global model sees it

    def moments(self, names: list[str]) -> dict[str, Payload]:
        """Round 0: each site's training-feature moments (``head_norm.client_moments``)."""

    def set_head_norm(self, owners: dict[str, Payload]) -> None:
        """The run's head standardization (``{"global": stats}`` or per site) for later work."""

    def train(self, round_idx: int, requests: dict[str, TrainRequest]) -> dict[str, TrainAnswer]:
        """One round at every requested site; an update (with a private handle) or the error."""

    def evaluate(self, group: str, requests: dict[str, list[EvalRequest]]
                 ) -> dict[str, list[Predictions]]:
        """Each site's predictions, one per request, in request order."""

    def export(self, folder: Path, state: RunState) -> None:
        """Write the selected final models that the driver's side holds into ``folder``."""

    # -- only where ``capabilities`` says so ---------------------------------------------
    def train_after_validation(self, group: str, plan: dict[str, list[EvalRequest]],
                               round_idx: int, requests: dict[str, TrainRequest]
                               ) -> tuple[dict[str, list[Predictions]], dict[str, TrainAnswer]]:
        """``validates_with_next_round``: the validation ``plan`` of the previous round
        (``group``), then round ``round_idx``'s training, as one batch: both answers."""

    def validate_then_test(self, group: str, plan: dict[str, list[EvalRequest]],
                           kept: dict[str, list[tuple[str, EvalRequest]]],
                           last: dict[str, list[tuple[str, EvalRequest]]],
                           kept_scores: dict[str, float | None], rule: str
                           ) -> dict[str, list[Predictions]]:
        """``validates_with_final_test``: the last validation ``plan``, then each site's final
        test of the candidate it selects (``selection.final_candidates``); the validation's
        answers (the test's are kept for the driver's final ``evaluate``)."""


class InProcessSites:
    """Every site in this process: the prepared cohort in memory and one shared model."""

    transport = "in-process"
    capabilities = Capabilities()  # one batch at a time: nothing to pipeline in one process

    def __init__(self, config: TrainConfig, model: ClientModel, cohort: FederatedCohort):
        self.config = config
        self.model = model
        self.cohort = cohort
        self.trainers = sorted(cohort.train_clients)
        self.vendors = sorted(cohort.vendors)
        self.holdout = cohort.holdout.name if cohort.holdout is not None else None
        self.finetuned: dict[str, Payload] = {}  # each site's exported fine-tuned model

    def _data(self, name: str) -> Any:
        if name in self.cohort.train_clients:
            return self.cohort.train_clients[name]
        if name in self.cohort.vendors:
            return self.cohort.vendors[name]
        if self.cohort.holdout is not None and name == self.cohort.holdout.name:
            return self.cohort.holdout
        raise KeyError(name)

    def moments(self, names: list[str]) -> dict[str, Payload]:
        everyone = cohort_moments(self.config, self.model, self.cohort)
        return {name: everyone[name] for name in names}

    def set_head_norm(self, owners: dict[str, Payload]) -> None:
        assign_head_norm(self.cohort, owners)

    def train(self, round_idx: int, requests: dict[str, TrainRequest]) -> dict[str, TrainAnswer]:
        answers: dict[str, TrainAnswer] = {}
        for name, request in requests.items():
            try:
                answers[name] = train_client(self.model, request.received, request.private,
                                             self._data(name), self.config, round_idx)
            except Exception as err:  # a failing site must not stop the federation
                answers[name] = err
        return answers

    def evaluate(self, group: str, requests: dict[str, list[EvalRequest]]
                 ) -> dict[str, list[Predictions]]:
        return {name: [self._evaluate_one(name, item) for item in items]
                for name, items in requests.items()}

    def _evaluate_one(self, name: str, item: EvalRequest) -> Predictions:
        data = self._data(name)
        if item.norm_of is not None:  # cross-site: the model travels with its own site's
            # head standardization and training split (FedDPA's instance weights compare a
            # test instance with the model's own training instances)
            owner = self._data(item.norm_of)
            data = replace(data, head_norm=owner.head_norm,
                           splits={**data.splits, "train": owner.splits["train"]})
        received, private = item.received, item.private
        if item.finetune:
            received = finetune_client(self.model, received, private, data, self.config)
            if item.export:
                self.finetuned[name] = received
        return evaluate_client(self.model, received, private, data, item.split, self.config,
                               global_only=item.global_only)

    def export(self, folder: Path, state: RunState) -> None:
        export_final_models(folder, self.model, state, finetuned=self.finetuned)
