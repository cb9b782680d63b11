"""What the notebooks call, and what runs them (the notebooks themselves are ``notebooks/``).

- ``experiments``  what the notebooks call: training runs and their specs, the benchmark; it
  re-exports the three modules below.
- ``workspace``    the shared workspace under ``data_dir``: phantom and harmonized cohort,
  built once per setting.
- ``flower_runs``  localhost Flower runs, built once per setting (notebook 05).
- ``fm_demo``      the foundation model, cohort features and a short MAE (notebook 02).
- ``exploration``  tables of the data and the model before training (notebooks 01 and 02).
- ``reports``      ``save_table`` into ``OUT/tables/`` and the ``OUT/README.md`` summary.
- ``runner``       execute ``notebooks/NN_*.ipynb`` with papermill (``duallora notebooks``).

Results of finished runs are read with ``duallora.results`` and drawn with ``duallora.plots``.
"""
