"""The Flower app (flwr 1.42, Message API): the federated engine with every site remote.

This is what real sites deploy; ``localhost/`` is the launcher that runs it on one machine.

- ``app/pyproject.toml``: the Flower app that ``flwr run`` ships (components + run config).
- ``server_app``: the ServerApp; waits for the sites and runs the core's round driver
  (``federated.loop.run_federation``) with ``FlowerSites``; no round loop of its own.
- ``sites``: ``FlowerSites``, the driver's ``Sites`` interface as one message per site per batch.
- ``settings``: ``FlowerSettings``, the deployment's own settings (out-dir, timeouts, DP).
- ``client_app``: the ClientApp; one site (vendor) per SuperNode, ``train_client`` /
  ``evaluate_client`` on the site's data, private state kept on the site (``node_state``).
- ``messaging``: site discovery by name and request/reply exchanges that survive node restarts.
- ``wire``: payload <-> ArrayRecord, and the audit of what reaches the server.
- ``node_state``: a site's private state between rounds (node context and node-local folder).
- ``run_config``: ``TrainConfig`` <-> Flower run config (same names and defaults).
- ``localhost/``: a real SuperLink and SuperNodes on 127.0.0.1, torn down always.
"""
