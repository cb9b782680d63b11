"""Subcommands of ``duallora``. Each module has ``register(subparsers)`` and ``run(args)``; a new
one is a module here plus a line in ``COMMAND_MODULES``. Commands stay thin: they parse, check
and call a package function.

- ``notebooks``     run the numbered notebooks with papermill (``duallora.notebooks.runner``).
- ``demo``          every notebook at the tutorial default, then ``reports/README.md``.
- ``train``         one strategy -> one run directory (``duallora.federated.loop``).
- ``pretrain``      MAE-pretrain a foundation model (``duallora.model.pretrain``).
- ``flower_local``  ``flower-local``: the same training over real Flower processes on this
  machine (``duallora.flower.localhost``).
- ``site_worker``   ``site-worker``: a site's long-lived worker the Flower ClientApp relays to.
- ``sweep``         strategies x seeds, then results tables (``duallora.federated.sweep``).
- ``tune_lr``       ``tune-lr``: a learning-rate grid chosen on validation loss.
- ``benchmark``     the pre-declared hypotheses H1-H3 (``duallora.benchmark``).
- ``fm_gates``      ``fm-gates``: is the frozen FM worth adapting? (``duallora.model.gates``)
- ``evaluate``      score a run's exported models or a fine-tuned classifier, no training
  (``duallora.federated.evaluate``).
"""

COMMAND_MODULES: list[str] = [
    "duallora.commands.notebooks",
    "duallora.commands.demo",
    "duallora.commands.train",
    "duallora.commands.pretrain",
    "duallora.commands.flower_local",
    "duallora.commands.site_worker",
    "duallora.commands.sweep",
    "duallora.commands.tune_lr",
    "duallora.commands.benchmark",
    "duallora.commands.evaluate",
    "duallora.commands.fm_gates",
]
