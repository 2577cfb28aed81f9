"""Kept for one release: the activation files and batch streams moved to :mod:`gba_lens.data`.

Import from :mod:`gba_lens.data.batches` (``SeededBatches``, ``TensorBatches``) and
:mod:`gba_lens.data.activations` (``load_activations``, ``save_activations``) instead.
"""

from gba_lens.data.activations import load_activations, save_activations
from gba_lens.data.batches import SeededBatches, SeekableBatches, TensorBatches

__all__ = ["SeededBatches", "SeekableBatches", "TensorBatches", "load_activations", "save_activations"]
