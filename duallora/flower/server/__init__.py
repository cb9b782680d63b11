"""The coordinating centre's side of the Flower app: everything in the ServerApp process.

- ``server_app``  the ServerApp (``app``): run config -> sites -> the core's round driver.
- ``sites``       ``FlowerSites``: the driver's batches as one message per site.
- ``messaging``   sites by name, and exchanges that survive a SuperNode's restart.
- ``privacy``     the central-DP budget (Flower's RDP accountant).
"""
