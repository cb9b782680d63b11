"""A trivial Flower app: the per-round cost of Flower itself on the kit's topology.

The ServerApp waits for ``num-sites`` nodes, then for each of ``rounds`` rounds sends
``messages-per-round`` messages to every node one after the other (a train message with a small
array, as the kit's), each answered by a ClientApp that imports nothing but flwr and does no
computation. Replies are polled every 0.25 s, as the kit's ``messaging.exchange`` does. It
writes the wall time of every round to ``out-file`` (JSON).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

POLL_SECONDS = 0.25
server = ServerApp()
client = ClientApp()


@client.train()
def answer(msg: Message, context: Context) -> Message:
    """Send the received array back (no computation)."""
    return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)


def one_exchange(grid: Grid, nodes: list[int], round_idx: int) -> None:
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(16, np.float32))}),
                          "config": ConfigRecord({"round": round_idx})})
    pending = set(grid.push_messages([
        Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN,
                group_id=str(round_idx)) for node in nodes]))
    while pending:
        for reply in grid.pull_messages(list(pending)):
            pending.discard(reply.metadata.reply_to_message_id)
        if pending:
            time.sleep(POLL_SECONDS)


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    want = int(config["num-sites"])
    while len(nodes := sorted(grid.get_node_ids())) < want:
        time.sleep(0.5)
    one_exchange(grid, nodes, 0)  # every node's first ClientApp start, not timed
    rounds = {}
    for round_idx in range(1, int(config["rounds"]) + 1):
        start = time.perf_counter()
        for _ in range(int(config["messages-per-round"])):
            one_exchange(grid, nodes, round_idx)
        rounds[round_idx] = time.perf_counter() - start
    if str(config["out-file"]):
        Path(str(config["out-file"])).write_text(json.dumps({"rounds": rounds}))
