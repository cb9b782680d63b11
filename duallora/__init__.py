"""Med-DualLoRA kit: federated dual-LoRA adaptation of a 3D cine CMR foundation model.

Packages by floor: a module imports its own floor or those below, never above
(``docs/ARCHITECTURE.md`` has the picture, ``tests/test_layers.py`` checks it).

0 ``duallora.base``       run config, option ranges, model presets, device, run directory
  (file names + writer), build-once markers, the command-line plumbing;
  ``duallora.paths`` / ``duallora.errors``: where things live; the one-line ``KitError``.
1 ``duallora.data``       harmonized cohort (from ``data_prep``) -> tensors for the model.
  ``duallora.model``      CineMA-compatible ConvViT, checkpoints, MAE pretraining, probes.
  ``duallora.results``    run directory -> metrics, statistics, tables, comparisons.
2 ``duallora.federated``  the federated engine: clients, strategies, round driver, selection,
  final test, reuse, sweep.
3 ``duallora.flower``     the same engine as a Flower app (``server/``, ``site/``, shared
  modules); ``flower.localhost`` runs it here. ``duallora.benchmark``: the pre-declared
  benchmark.
4 ``duallora.plots``      every figure, one vendor palette.
  ``duallora.notebooks``  what the notebooks call (workspace, runs, reports) and their runner.
  ``duallora.commands``   one module per ``duallora`` subcommand; ``duallora.cli`` dispatches.
"""

__version__ = "0.1.0"
