"""Data: token streams, the stdlib corpus, activation files and seekable batch streams.

- :mod:`gba_lens.data.tokens`: tokenising texts into one stream, cutting it into BOS-prefixed
  rows, rows as a ``datasets.Dataset`` (the format SAELens's ``ActivationsStore`` reads);
- :mod:`gba_lens.data.stdlib_corpus`: the Python standard library as an offline corpus (the
  train/val split, cached token streams, token datasets);
- :mod:`gba_lens.data.activations`: cached activations on disk (safetensors or a SAELens
  activation cache) as a ``[n, d_in]`` tensor;
- :mod:`gba_lens.data.batches`: seekable mini-batch streams for the trainer (a resumed run sees
  the same batches as an uninterrupted one).

This package sits below ``models``, ``training`` and ``circuits``: it imports none of them.
"""

from gba_lens.data.activations import load_activations, save_activations
from gba_lens.data.batches import SeededBatches, SeekableBatches, TensorBatches
from gba_lens.data.tokens import chunk_stream, rows_dataset, tokenize_corpus

__all__ = [
    "SeededBatches",
    "SeekableBatches",
    "TensorBatches",
    "chunk_stream",
    "load_activations",
    "rows_dataset",
    "save_activations",
    "tokenize_corpus",
]
