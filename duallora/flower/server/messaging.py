"""Server-side messaging: which node is which site, and one request/reply exchange per round.

Runs in: the ServerApp process (started by the SuperLink's SuperExec).

Sites are known by name (the vendor, from each SuperNode's node config ``client-name``), never by
Flower node id: a node id changes when a SuperNode restarts. ``SiteDirectory`` asks every new
node who it is (a ``query.hello`` message) and keeps the name -> node id map current.

``exchange`` sends one message per site and collects the replies. Unlike Flower's
``send_and_receive`` it polls quickly, and when a site's node goes away (its SuperNode stopped, so
the SuperLink answers "node unavailable") it waits for that site to connect again and sends the
same request to the new node. A client computes a round from ``(seed, round, site)`` and its saved
private state, so the repeated request gives the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from duallora.errors import KitError
from duallora.flower.protocol import CONFIG, HELLO

POLL_SECONDS = 0.25
# Errors after which the same request is sent again once the site is back.
RETRY_CODES = {ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE,
               ErrorCode.REPLY_MESSAGE_UNAVAILABLE, ErrorCode.CLIENT_APP_CRASHED}


class SiteFailed(RuntimeError):  # noqa: N818 - a result, not raised
    """A site answered with an error (its ClientApp raised): it sits this round out."""


class SiteAbsent(SiteFailed):
    """A site was not connected for ``site_wait`` seconds: the round goes on without it."""


@dataclass
class SiteDirectory:
    """Site name <-> current Flower node id, learnt by asking each node."""

    grid: Grid
    run_key: str
    by_name: dict[str, int] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    asked: set[int] = field(default_factory=set)
    hellos: dict[str, int] = field(default_factory=dict)  # hello message id -> node id
    problems: dict[int, str] = field(default_factory=dict)  # node id -> why it did not answer
    log: Callable[[str], None] = print
    # more config for each hello (round 0's request, see FlowerSites.moments), and each
    # site's latest hello reply
    hello_config: dict[str, Any] = field(default_factory=dict)
    hello_replies: dict[str, Message] = field(default_factory=dict)

    def node(self, name: str) -> int | None:
        return self.by_name.get(name)

    def forget(self, name: str) -> None:
        self.by_name.pop(name, None)

    def refresh(self) -> None:
        """Forget nodes that left, ask new nodes who they are, read the answers that arrived.

        Never blocks: a node whose ClientApp is slow to start simply answers a later call.
        """
        connected = set(self.grid.get_node_ids())
        for name, node_id in list(self.by_name.items()):
            if node_id not in connected:
                self.by_name.pop(name)
        new = sorted(connected - self.asked)
        if new:
            self.asked.update(new)
            messages = [Message(content=RecordDict({CONFIG: ConfigRecord(
                                    {**self.hello_config, "run-key": self.run_key})}),
                                dst_node_id=node_id, message_type=HELLO, group_id="hello")
                        for node_id in new]
            self.hellos.update(zip(self.grid.push_messages(messages), new, strict=True))
        if not self.hellos:
            return
        for reply in self.grid.pull_messages(list(self.hellos)):
            node_id = self.hellos.pop(reply.metadata.reply_to_message_id, None)
            if node_id is None:
                continue
            if reply.has_error():
                self.problems[node_id] = reply.error.reason.strip().splitlines()[-1][:300]
                self.log(f"node {node_id} did not say which site it is: {reply.error.reason}")
                continue
            said = reply.content[CONFIG]
            if "error-type" in said:  # the site's relay or worker could not answer
                self.problems[node_id] = f"{said['error-type']}: {said.get('error', '')}"[:300]
                self.log(f"node {node_id} did not say which site it is: "
                         f"{self.problems[node_id]}")
                self.asked.discard(node_id)  # ask again: its worker may be starting
                continue
            name = str(said["client-name"])
            previous = self.by_name.get(name)
            if previous is not None and previous != node_id:
                # a restarted SuperNode (new id) while the SuperLink still lists the old one
                # (killed without deregistering): the newest node speaks for the site
                self.log(f"site {name} moved from node {previous} to node {node_id}")
            self.by_name[name] = node_id
            self.info[name] = dict(reply.content[CONFIG])
            self.hello_replies[name] = reply
            self.log(f"site {name} is node {node_id} ({self.info[name]})")

    def wait_for(self, names: Iterable[str] | None, count: int, timeout: float) -> None:
        """Wait until the named sites (or, with ``names=None``, ``count`` sites) are known."""
        wanted = set(names) if names is not None else None
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            have = set(self.by_name)
            if (wanted is not None and wanted <= have) or (wanted is None and len(have) >= count):
                return
            if time.monotonic() > deadline:
                missing = sorted(wanted - have) if wanted is not None else []
                raise KitError(
                    f"timed out after {timeout:.0f} s waiting for sites: have {sorted(have)}"
                    + (f", missing {missing}" if missing else f", need {count}")
                    + "".join(f"; node {node}: {why}" for node, why in self.problems.items()))
            time.sleep(0.5)


def exchange(grid: Grid, sites: SiteDirectory, requests: dict[str, RecordDict],
             message_type: str | dict[str, str], group_id: str, timeout: float,
             on_reply: Callable[[str, Message], None] | None = None,
             site_wait: float = 0.0) -> dict[str, Message | SiteFailed]:
    """Send ``requests[site]`` to each site and return each site's reply (or ``SiteFailed``).

    A site whose node disappears is waited for (up to ``timeout`` for the whole exchange) and
    asked again on its new node; a site whose ClientApp raises is reported as ``SiteFailed``.
    ``message_type`` may name each site's type (one message per site either way).
    ``site_wait`` > 0: a site whose node is not connected for that long (from the start of the
    exchange or from when it went away) is reported as ``SiteAbsent`` and the others go on.
    """
    types = (message_type if isinstance(message_type, dict)
             else dict.fromkeys(requests, message_type))
    deadline = time.monotonic() + timeout
    results: dict[str, Message | SiteFailed] = {}
    pending: dict[str, str] = {}          # message id -> site
    waiting = set(requests)               # sites whose request is not (or no longer) in flight
    absent_since: dict[str, float] = {}
    while waiting or pending:
        if time.monotonic() > deadline:
            silent = sorted(waiting | set(pending.values()))
            raise KitError(f"round {group_id}: no reply from {silent} within {timeout:.0f} s")
        if waiting:
            sites.refresh()
            ready = [name for name in sorted(waiting) if sites.node(name) is not None]
            messages = [Message(content=requests[name], dst_node_id=sites.node(name),
                                message_type=types[name], group_id=group_id)
                        for name in ready]
            if messages:
                pending.update(zip(grid.push_messages(messages), ready, strict=True))
                waiting -= set(ready)
            now = time.monotonic()
            for name in sorted(waiting):
                since = absent_since.setdefault(name, now)
                if site_wait > 0 and now - since > site_wait:
                    waiting.discard(name)
                    results[name] = SiteAbsent(f"site {name} was not connected for "
                                               f"{site_wait:.0f} s")
                    sites.log(f"round {group_id}: site {name} stayed away; going on without it")
        for reply in grid.pull_messages(list(pending)) if pending else []:
            name = pending.pop(reply.metadata.reply_to_message_id, None)
            if name is None:
                continue
            if reply.has_error():
                if reply.error.code in RETRY_CODES:
                    sites.log(f"round {group_id}: site {name} unreachable "
                              f"({reply.error.reason.splitlines()[0][:120]}); waiting for it")
                    sites.forget(name)
                    waiting.add(name)
                    absent_since[name] = time.monotonic()
                else:
                    results[name] = SiteFailed(f"site {name}: {reply.error.reason}")
                continue
            results[name] = reply
            if on_reply is not None:
                on_reply(name, reply)
        if waiting or pending:
            time.sleep(POLL_SECONDS if pending else 1.0)
    return results
