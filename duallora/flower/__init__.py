"""The Flower app (flwr 1.42, Message API): the federated engine with every site remote.

This is what real sites deploy; ``localhost/`` is the launcher that runs it on one machine.

- ``app/pyproject.toml``: the Flower app that ``flwr run`` ships (components + run config).
- ``server_app``: the ServerApp; waits for the sites and runs the core's round driver
  (``federated.loop.run_federation``) with ``FlowerSites``; no round loop of its own.
- ``sites``: ``FlowerSites``, the driver's ``Sites`` interface as one message per site per batch.
- ``settings``: ``FlowerSettings``, the deployment's own settings (out-dir, timeouts, DP).
- ``client_app``: the ClientApp, a thin relay (flwr + standard library only): it forwards each
  message over a unix socket to the site's long-lived worker.
- ``relay_codec``: message content <-> bytes on that socket (no pickling).
- ``site_worker``: the worker (``duallora site-worker``): one per site, holds the model, the
  cohort and the private state in memory; ``site_handlers``: what it does per message type
  (``train_client`` / ``evaluate_client`` on the site's data, private state on the site).
- ``privacy``: the central-DP budget (epsilon for a delta, Flower's RDP accountant).
- ``messaging``: site discovery by name and request/reply exchanges that survive node restarts.
- ``wire``: payload <-> ArrayRecord, and the audit of what reaches the server.
- ``node_state``: a site's private state between rounds (node context and node-local folder).
- ``run_config``: ``TrainConfig`` <-> Flower run config (same names and defaults).
- ``localhost/``: a real SuperLink, SuperNodes and site workers on 127.0.0.1 (optionally with
  TLS and SuperNode authentication, ``localhost/tls``), torn down always.
"""
