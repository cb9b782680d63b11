"""Parameters and exact message sizes of a strategy, from real serialized payloads.

Upload: ``len(encode(client.shared_payload()))``, the blob a client sends (what ``comm.jsonl``
records). Download: the server's broadcast, i.e. ``strategy.aggregate`` applied to decoded
uploads and encoded again (FedALT: the leave-one-out mean under the rest-of-world adapter's
names, ``fedalt.rest_of_world``), so both directions go through the kit's own functions.
Every client receives and sends one message per round, so a round costs ``n_clients`` times
each.
"""

from __future__ import annotations

from typing import Any

from duallora.federated.client_model import ClientModel
from duallora.federated.fedalt import rest_of_world
from duallora.federated.serialization import decode, encode
from duallora.federated.strategies import LEAVE_ONE_OUT


def message_bytes(model: ClientModel) -> dict[str, int]:
    """Bytes of one upload and one download message for ``model``'s strategy (0 without a
    server: ``local`` exchanges nothing and ``centralized`` pools the data instead)."""
    strategy = model.strategy
    if not strategy.federated or not model.shared_names:
        return {"upload_bytes": 0, "download_bytes": 0}
    blob = encode(model.shared_payload())
    received = decode(blob)
    if strategy.aggregation == LEAVE_ONE_OUT:  # what one site gets: the others' mean, renamed
        broadcast = encode(rest_of_world({"this": received, "other": decode(blob)}, "this",
                                         received))
    else:
        broadcast = encode(strategy.aggregate([(received, 3), (decode(blob), 1)]))
    return {"upload_bytes": len(blob), "download_bytes": len(broadcast)}


def parameter_counts(model: ClientModel) -> dict[str, int]:
    """Trainable, shared (uploaded), private (kept on the site) and total parameters."""
    total = sum(int(p.numel()) for p in model.params.values())
    return {"total_params": total,
            "trainable_params": model.count(model.trainable_names),
            "shared_params": model.count(model.shared_names),
            "private_params": model.count(model.private_names)}


def strategy_costs(model: ClientModel, n_clients: int) -> dict[str, Any]:
    """Parameter counts plus message bytes per client and per round for ``n_clients`` sites."""
    sizes = message_bytes(model)
    row: dict[str, Any] = {"strategy": model.strategy.name, **parameter_counts(model), **sizes}
    row["n_clients"] = n_clients
    row["upload_bytes_per_round"] = sizes["upload_bytes"] * n_clients
    row["download_bytes_per_round"] = sizes["download_bytes"] * n_clients
    return row
