"""The privacy budget of the ServerApp's central DP: epsilon for a delta, per round and in total.

Runs in: the ServerApp process; its numbers are read back from ``metrics.csv``.

The mechanism (``server_app.GaussianNoiseOnAggregate``): every site clips its update of the
shared parameters to L2 norm ``C`` (Flower's ``fixedclipping_mod``), the server adds Gaussian
noise of standard deviation ``z * C * max_k w_k`` to the weighted mean, where ``w_k`` are the
aggregation weights. One site moves the weighted mean by at most ``max_k w_k * C``, so each
round is a Gaussian mechanism with noise multiplier ``z`` at the site level (a neighbouring
federation adds or removes one site's update, Flower's convention for ``compute_stdv``). Every
site takes part in every round (no sampling, hence no amplification), and the rounds compose.

The accountant is Flower's own (``flwr.supercore.privacy_accounting``'s ``RdpAccountant``, the
one its fixed-clipping DP strategy takes), which wraps Google's maintained ``dp-accounting``
RDP accountant: the kit's number is the one a Flower user of the same mechanism would get.
Only the update of the shared parameters is covered; the private (local) parts never leave a
site, and training/validation metrics are not accounted.
"""

from __future__ import annotations

import pandas as pd

from duallora.errors import KitError

DEFAULT_DELTA = 1e-5


def epsilon(noise_multiplier: float, releases: int, delta: float = DEFAULT_DELTA,
            sites: int = 1) -> float:
    """Epsilon after ``releases`` noisy aggregates with noise multiplier ``noise_multiplier``
    (0 releases: 0). ``sites`` is only recorded (no sampling amplification is claimed)."""
    if releases <= 0:
        return 0.0
    if noise_multiplier <= 0:
        raise KitError(f"dp-noise-multiplier {noise_multiplier}: epsilon is infinite without "
                       "noise; use a positive value")
    if not 0 < delta < 1:
        raise KitError(f"dp-delta {delta}: must lie strictly between 0 and 1")
    try:
        from flwr.supercore.privacy_accounting import (
            GaussianPrivacyEvent,
            NeighboringRelation,
            PrivacyConfig,
            SamplingMethod,
        )
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        accountant = RdpAccountant(PrivacyConfig(
            target_delta=delta, population_size=max(1, sites),
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION))
    except ImportError as err:
        raise KitError(f"privacy accounting needs dp-accounting (pip install 'flwr[dp]'): "
                       f"{err}") from None
    sites = max(1, sites)
    accountant.compose(GaussianPrivacyEvent(float(noise_multiplier), sites, sites),
                       count=int(releases))
    return float(accountant.get_epsilon(delta))


def epsilon_curve(noise_multiplier: float, rounds: int, delta: float = DEFAULT_DELTA
                  ) -> pd.DataFrame:
    """``round, epsilon_round, epsilon`` for rounds 1..``rounds`` (every round released):
    what notebook 05 plots beside accuracy."""
    single = epsilon(noise_multiplier, 1, delta)
    return pd.DataFrame({"round": range(1, rounds + 1),
                         "epsilon_round": [single] * rounds,
                         "epsilon": [epsilon(noise_multiplier, r, delta)
                                     for r in range(1, rounds + 1)],
                         "delta": [delta] * rounds})
