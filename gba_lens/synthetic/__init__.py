"""Synthetic data with known features and the metrics that score an SAE against them.

:mod:`~gba_lens.synthetic.paper_model` is the paper's sparse-mixture model,
:mod:`~gba_lens.synthetic.metrics` the recovery metrics. The experiments built on them live in
:mod:`gba_lens.experiments` (``gba_lens.synthetic.experiments`` re-exports them for one release).
"""
