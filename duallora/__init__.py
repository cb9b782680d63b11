"""Med-DualLoRA kit: federated dual-LoRA adaptation of a 3D cine CMR foundation model.

Packages, in the order data flows through them (``docs/ARCHITECTURE.md`` has the picture):

- ``duallora.data``       harmonized cohort (from ``data_prep``) -> tensors for the model.
- ``duallora.model``      CineMA-compatible ConvViT, presets, checkpoints, MAE pretraining.
- ``duallora.federated``  the federated engine: config, clients, strategies, round driver,
  run directory writer, sweep.
- ``duallora.flower``     the same engine as a Flower app; ``flower.localhost`` runs it here.
- ``duallora.results``    run directory -> metrics, statistics, tables, comparisons.
- ``duallora.plots``      every figure, one vendor palette.
- ``duallora.notebooks``  what the notebooks call (workspace, tables, reports) and their runner.
- ``duallora.commands``   one module per ``duallora`` subcommand; ``duallora.cli`` dispatches.
- ``duallora.paths`` / ``duallora.errors``  where things live; the one-line ``KitError``.
"""

__version__ = "0.1.0"
