"""The last round's validation and the final test as one batch per site.

The final test needs the selected models, and the selection needs the last validation, so a
plain transport asks each site twice at the end of a run. A transport that sends one message
per site per round (Flower) asks once instead, under a selection rule a site can apply by
itself (``selection.SITE_DECIDED_RULES``):

- the driver passes the two final plans the last validation can lead to
  (``selection.final_candidates``: ``kept``, no selection moves to the last round, and ``last``,
  every selection does) with each site's selected score so far;
- each site validates first, then decides its own selection with the driver's rule
  (``site_takes_last``) and tests (and exports, and fine-tunes) only the personalized model
  of the candidate it chose; the global model's selection is a decision over all sites, so
  the site tests both candidates' global models (a cheap extra prediction, no side effect);
- the driver applies the validation as always and then asks for the actual final plan; every
  request of it was answered already (``PrefetchedTests``), so nothing more is sent.

The numbers are those of the two-step order: the same computations, in the same order on
each site (validation before test), the same selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from duallora.federated.client import Predictions
from duallora.federated.selection import last_round_replaces, selection_score
from duallora.federated.sites import EvalRequest

KEPT, LAST = "kept", "last"   # which candidate a conditional request belongs to

def same_request(first: EvalRequest, second: EvalRequest) -> bool:
    """The same prediction: the same split, flags and the very same payload and private
    handle objects (the candidates and the final plan share them with the run state)."""
    return (first.split == second.split and first.global_only == second.global_only
            and first.export == second.export and first.finetune == second.finetune
            and first.norm_of == second.norm_of and first.received is second.received
            and first.private is second.private)


def merged_requests(kept: list[EvalRequest], last: list[EvalRequest]
                    ) -> list[tuple[EvalRequest, str | None]]:
    """One site's final requests of both candidates, each once, with its condition: a
    personalized request found in only one candidate is made only if the site's decision
    (``site_takes_last``) picks that candidate; every other request is made always."""
    merged: list[tuple[EvalRequest, str | None]] = []

    def add(item: EvalRequest, candidate: str, other: list[EvalRequest]) -> None:
        if any(same_request(item, seen) for seen, _ in merged):
            return
        shared = any(same_request(item, theirs) for theirs in other)
        merged.append((item, None if shared or item.global_only else candidate))

    for item in kept:
        add(item, KEPT, last)
    for item in last:
        add(item, LAST, kept)
    return merged


def site_takes_last(validation: Predictions, kept_score: float | None, rule: str) -> bool:
    """A site's own decision: does its last round replace its selected personalized model?
    The driver's rule on the same predictions (``apply_validation`` decides the same)."""
    return last_round_replaces(selection_score(validation), kept_score, rule)


@dataclass
class PrefetchedTests:
    """Final-test predictions made with the last validation, looked up by request."""

    answers: dict[str, list[tuple[EvalRequest, Predictions]]] = field(default_factory=dict)

    def add(self, site: str, request: EvalRequest, predictions: Predictions) -> None:
        self.answers.setdefault(site, []).append((request, predictions))

    def take(self, requests: dict[str, list[EvalRequest]]
             ) -> tuple[dict[str, list[Predictions]], dict[str, list[EvalRequest]]]:
        """(answers of the sites whose every request was prefetched, the requests of the
        other sites, still to ask); forgets everything prefetched."""
        found: dict[str, list[Predictions]] = {}
        missing: dict[str, list[EvalRequest]] = {}
        for site, items in requests.items():
            held = self.answers.get(site, [])
            matches = [next((preds for request, preds in held if same_request(item, request)),
                            None) for item in items]
            if all(match is not None for match in matches):
                found[site] = matches
            else:
                missing[site] = items
        self.answers = {}
        return found, missing
