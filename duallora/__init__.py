"""Med-DualLoRA kit: federated dual-LoRA adaptation of a 3D cine CMR foundation model.

Subpackages and modules (each has one job):
- ``duallora.model``      CineMA-compatible ConvViT, checkpoint loading, MAE pretraining pieces.
- ``duallora.data``       harmonized cohort -> tensors for the model.
- ``duallora.cli``        the ``duallora`` / ``python -m duallora`` command line.
- ``duallora.notebook_runner``  papermill runner for ``notebooks/NN_*.ipynb``.
"""

__version__ = "0.1.0"
