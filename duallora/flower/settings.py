"""Settings of a Flower deployment itself (not of the training), as one validated dataclass.

Runs in: the ServerApp process and the launcher that submits a run (shared).

They are run-config keys beside the training ones (``[tool.flwr.app.config]``, hyphenated), and
the ones a user may want to change are options of ``duallora flower-local`` (generated from the
field metadata, as the training options are from ``TrainConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass

from duallora.base.config import setting
from duallora.errors import KitError

# RUN_DIR/flower/finished.json: the ServerApp's last word. Here, not in ``server_app`` (which
# imports torch and PEFT), so that the launcher can look for it without them.
FINISHED = "finished.json"


@dataclass
class FlowerSettings:
    """Where the server writes, whom it waits for, how long, and central DP."""

    out_dir: str = setting("", "run directory on the server machine (empty: refuse to start)",
                           cli=False)
    num_clients: int = setting(0, "wait for this many sites (0: take every connected site)",
                               cli=False)
    node_wait_timeout: float = setting(120.0, "seconds to wait for the sites to connect")
    round_timeout: float = setting(900.0, "seconds a round may take before the run fails")
    site_wait: float = setting(0.0, "seconds a round waits for a site that is not connected "
                               "before it goes on without it (logged; 0: wait up to "
                               "round-timeout)")
    resume: bool = setting(False, "continue the run in out-dir", cli=False)
    overwrite: bool = setting(False, "replace a run already in out-dir", cli=False)
    dp_noise_multiplier: float = setting(0.0, "> 0: clip each site's update and add Gaussian "
                                         "noise to the aggregate (central DP; 0 = off)")
    dp_clipping_norm: float = setting(1.0, "L2 bound of one site's update of the shared "
                                      "parameters (central DP)")
    dp_delta: float = setting(1e-5, "delta for which the run reports its privacy budget "
                              "epsilon (central DP; metrics.csv split privacy)")

    def __post_init__(self) -> None:
        if self.dp_noise_multiplier < 0 or self.dp_clipping_norm <= 0:
            raise KitError("dp-noise-multiplier must be >= 0 and dp-clipping-norm > 0")
        if not 0 < self.dp_delta < 1:
            raise KitError(f"dp-delta {self.dp_delta}: must lie strictly between 0 and 1")
        if self.site_wait < 0:
            raise KitError(f"site-wait {self.site_wait}: must be >= 0")
        if self.node_wait_timeout <= 0 or self.round_timeout <= 0:
            raise KitError("node-wait-timeout and round-timeout must be positive")

    @property
    def central_dp(self) -> bool:
        return self.dp_noise_multiplier > 0
