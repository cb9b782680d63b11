"""The federated engine: one run of one strategy over the clients of a harmonized cohort.

``TrainConfig``, devices and the run directory's writer are on the ground floor
(``duallora.base``: ``config``, ``device``, ``rundir``; ``federated.config`` re-exports the
config's names).

- ``prepare``        harmonized folder -> the run's clients (same for in-process and Flower).
- ``cohort``         clients (one per vendor) and their train / val / test splits.
- ``client_model``   frozen foundation model + the strategy's adapters and heads.
- ``adapters``       LoRA adapters on the ConvViT with Hugging Face PEFT.
- ``prefix_cache``   features of the frozen blocks, computed once per client.
- ``head_norm``      head-input standardization with statistics pooled across clients.
- ``strategies``     the strategy table: declarative objects (add a strategy here).
- ``client``         what one client does in a round: train or evaluate (pure functions).
- ``dpa``            FedDPA's instance-wise weighting of the global and local adapters.
- ``orthogonal``     orthogonal dual LoRA's subspace-overlap penalty (and its measurement).
- ``fedalt``         FedALT's per-layer router and leave-one-out rest-of-world adapter.
- ``serialization``  the one wire format of every message (a safetensors blob).
- ``loop``           the round driver: send -> local training -> upload -> aggregate ->
                     validate -> select; the only place that decides what happens in a round.
- ``rounds``         one round: what each site receives, its answers, the aggregation.
- ``selection``      validation and which round's models the final test uses (``--selection``).
- ``final_test``     the final test, predictions.csv, summary and cost rows, the export.
- ``last_validation`` the last validation and the final test as one batch per site.
- ``sites``          the driver's batch-shaped view of the sites and the ``Capabilities`` a
                     transport declares; ``InProcessSites`` (the Flower transport is
                     ``duallora.flower.server.sites.FlowerSites``).
- ``state``          ``RunState``: the typed state between rounds (the checkpoint).
- ``tune``           a small learning-rate grid per strategy, chosen on validation loss.
- ``norm_logger``    the ``after_round`` hook that logs adapter norms (``adapter_norms.csv``).
- ``export``         the final models, reusable outside the kit.
- ``reuse``          train a configuration once, reuse (or resume) it later (``base.markers``).
- ``sweep``          strategies x seeds as parallel ``duallora train`` runs (``duallora sweep``).

Evaluation rows and everything that reads a run back live in ``duallora.results``.
"""
