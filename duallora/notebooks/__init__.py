"""What the notebooks call, and what runs them (the notebooks themselves are ``notebooks/``).

- ``experiments``  build-or-reuse the shared workspace under ``data_dir``: phantom cohort,
  harmonized cohort, training runs (in-process and Flower), foundation model, MAE demo.
- ``exploration``  tables of the data and the model before training (notebooks 01 and 02).
- ``reports``      ``save_table`` into ``OUT/tables/`` and the ``OUT/README.md`` summary.
- ``runner``       execute ``notebooks/NN_*.ipynb`` with papermill (``duallora notebooks``).

Results of finished runs are read with ``duallora.results`` and drawn with ``duallora.plots``.
"""
