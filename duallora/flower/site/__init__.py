"""A hospital's side of the Flower app: the ClientApp relay and the long-lived site worker.

- ``client_app``   the ClientApp (``app``), one process per message: relays it to the worker.
- ``relay_codec``  message content <-> bytes on the socket between the two.
- ``worker``       the site worker process (``duallora site-worker``): model, cohort, state.
- ``handlers``     what the worker does with each message type.
- ``node_state``   the site's private state between rounds (memory and node-local folder).
"""
