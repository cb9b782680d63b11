"""The state of one federated run between rounds: what the checkpoint holds, typed.

The round driver (``federated.loop``) is the only writer. Everything a resumed run needs is
here, so ``RUN_DIR/checkpoints/last.pt`` (``to_checkpoint``) is enough to continue a run and
end with the same files as an unbroken one.

A site's private part is an opaque *handle* that only the transport understands: in-process it
is the private payload itself; over Flower it is a reference to a round whose private state the
site keeps on its own disk (the server never holds private tensors). The driver only stores
handles and passes them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from duallora.federated.serialization import Payload


@dataclass
class SelectedRound:
    """The round a model was selected from (best validation score), with what it needs."""

    round: int
    score: float
    received: Payload | None      # the global payload the model was evaluated with
    private: Any = None           # the site's private handle (None for the global model)
    own_upload: Payload | None = None  # the site's own upload of that round: with ``private``
    #                                    the personalized model before aggregation


@dataclass
class RunState:
    """Rounds done, the current global payload, each site's private handle, selections, logs."""

    global_payload: Payload
    round: int = 0
    private: dict[str, Any] = field(default_factory=dict)
    best: dict[str, SelectedRound] = field(default_factory=dict)
    best_global: SelectedRound | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    comm: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    head_norm: dict[str, Payload] = field(default_factory=dict)
    uploads: dict[str, Payload] = field(default_factory=dict)  # each site's latest upload
    finished: bool = False

    def metric(self, round_idx: int, client: str, split: str, metric: str, value: float) -> None:
        self.metrics.append({"round": round_idx, "client": client, "split": split,
                             "metric": metric, "value": float(value)})

    def event(self, round_idx: int, client: str, event: str, **details: Any) -> None:
        self.events.append({"round": round_idx, "client": client, "event": event, **details})

    # -- checkpoint format: a plain dict (readable without this class, and by older kits) ------
    def to_checkpoint(self) -> dict[str, Any]:
        best = {name: _selected_dict(sel, "received") for name, sel in self.best.items()}
        best_global = (None if self.best_global is None
                       else {"round": self.best_global.round, "score": self.best_global.score,
                             "payload": self.best_global.received})
        return {"round": self.round, "global": self.global_payload, "private": self.private,
                "best": best, "best_global": best_global, "metrics": self.metrics,
                "comm": self.comm, "events": self.events, "head_norm": self.head_norm,
                "uploads": self.uploads, "finished": self.finished}

    @classmethod
    def from_checkpoint(cls, values: dict[str, Any]) -> RunState:
        best = {name: SelectedRound(int(sel["round"]), float(sel["score"]), sel["received"],
                                    sel.get("private"), sel.get("own_upload"))
                for name, sel in values.get("best", {}).items()}
        raw_global = values.get("best_global")
        best_global = (None if raw_global is None else
                       SelectedRound(int(raw_global["round"]), float(raw_global["score"]),
                                     raw_global["payload"]))
        return cls(global_payload=values["global"], round=int(values["round"]),
                   private=dict(values.get("private", {})), best=best, best_global=best_global,
                   metrics=list(values.get("metrics", [])), comm=list(values.get("comm", [])),
                   events=list(values.get("events", [])),
                   head_norm=dict(values.get("head_norm") or {}),
                   uploads=dict(values.get("uploads") or {}),
                   finished=bool(values.get("finished", False)))


def _selected_dict(selected: SelectedRound, payload_key: str) -> dict[str, Any]:
    return {"round": selected.round, "score": selected.score, payload_key: selected.received,
            "private": selected.private, "own_upload": selected.own_upload}
