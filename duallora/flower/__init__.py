"""The Flower app (flwr 1.42, Message API): the federated engine with every site remote.

This is what real sites deploy; ``localhost/`` is the launcher that runs it on one machine.
Organised by the process each module runs in (every module's docstring says so too):

``server/``: the ServerApp process, at the coordinating centre (started by the SuperLink).
- ``server_app``: the ServerApp; waits for the sites and runs the core's round driver
  (``federated.loop.run_federation``) with ``FlowerSites``; no round loop of its own.
- ``sites``: ``FlowerSites``, the driver's ``Sites`` interface as one message per site per batch.
- ``messaging``: site discovery by name and request/reply exchanges that survive node restarts.
- ``privacy``: the central-DP budget (epsilon for a delta, Flower's RDP accountant).

``site/``: the processes of one hospital (beside its SuperNode).
- ``client_app``: the ClientApp (one process per message), a thin relay (flwr + standard
  library only): it forwards each message over a unix socket to the site's worker.
- ``relay_codec``: message content <-> bytes on that socket (no pickling); both ends use it.
- ``worker``: the long-lived site worker (``duallora site-worker``): holds the model, the cohort
  and the private state in memory; ``handlers``: what it does per message type
  (``train_client`` / ``evaluate_client`` on the site's data, private state on the site);
  ``node_state``: the private state between rounds (memory and node-local folder).

Shared by both sides:
- ``protocol``: the message types and record keys, declared once (flwr only, no torch).
- ``wire``: payload <-> ArrayRecord, and the audit of what reaches the server.
- ``run_config``: ``TrainConfig`` <-> Flower run config (same names and defaults), and the
  app's ``app/pyproject.toml`` (components + run config) that ``flwr run`` ships.
- ``settings``: ``FlowerSettings``, the deployment's own settings (out-dir, timeouts, DP).
- ``flat_toml``: flat ``key = value`` TOML files (node and run configs).

``localhost/``: the launcher's process: a real SuperLink, SuperNodes and site workers on
127.0.0.1 (optionally with TLS and SuperNode authentication, ``localhost/tls``), torn down
always.
"""
