"""The ground floor: what a run is, where it computes and what it writes down.

Every other part of the kit may import these modules; they import nothing of the kit but each
other, ``duallora.errors`` and ``duallora.paths`` (``tests/test_layers.py`` checks it).

- ``config``        ``TrainConfig``: everything that defines a run (``config.json``), and the
                    learning-rate choice ``--lr-from`` reads.
- ``ranges``        what values an option accepts, declared beside its help text.
- ``presets``       model sizes and the ``frames`` option's names (what ``--model-size`` and
                    ``--frames`` accept; the model itself is ``duallora.model``).
- ``device``        ``--device`` and ``--precision``: where and in which precision a run computes.
- ``rundir``        the run directory: its file names and columns, and its atomic writer.
- ``command_line``  the one-line-error parser and dispatch of ``duallora`` and ``data_prep``.

Nothing is imported here, so ``import duallora.base.config`` stays light.
"""
