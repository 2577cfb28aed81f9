"""One training run of a comparison: which method to train (:class:`MethodSpec`), how it is
trained and scored (:func:`train_and_evaluate`), and what comes back (:class:`RunRecord`).

Every method is trained by the same harness (:func:`gba_lens.training.train.train_sae`) on the
same seeded batches and scored with the same metrics, so that rows of a table differ only in
the method.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from gba_lens.synthetic.metrics import RecoveryResult, evaluate_on_synthetic
from gba_lens.training.data import SeededBatches
from gba_lens.training.methods import build_sae
from gba_lens.training.train import TrainConfig, train_sae

CONSISTENCY_SEED = 999
"""Seed of the fixed sample on which each neuron's firing frequency is measured for cross-seed
consistency: the same sample for every run, so that frequencies of different runs compare."""


@dataclass
class MethodSpec:
    """One row of a comparison: a label, a method name and its SAELens config parameters."""

    label: str
    """The row's display label (tables and plots); never used to find a row."""
    method: str
    """A name of :data:`gba_lens.training.methods.METHODS`."""
    params: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    paper: tuple[float, float] | None = None  # the paper's FRR at tau 0.8 / 0.9, if reported
    role: str | None = None
    """The slot this row fills in an experiment's summary (e.g. ``"l1"`` for every row of an L1
    coefficient sweep, the best of which is reported); experiments find rows by role, not label."""
    cost: float = 1.0
    """Its runs' time relative to the other rows' runs: a pool of processes starts the costliest first, so that
    no long run starts last while the other processes idle (no number depends on it)."""


@dataclass
class RunRecord:
    """The outcome of one (method, seed) run."""

    label: str
    seed: int
    result: RecoveryResult
    seconds: float
    sae: Any = field(default=None, repr=False)  # only when the job ran in this process
    directions: Float[torch.Tensor, "width d"] | None = field(default=None, repr=False)  # decoder rows
    frequencies: Float[torch.Tensor, " width"] | None = field(default=None, repr=False)  # on a fixed sample


def train_and_evaluate(
    spec: MethodSpec,
    model: Any,
    width: int,
    train: TrainConfig,
    seed: int,
    eval_samples: int = 20_000,
    consistency_samples: int = 0,
    stream_cache: list[torch.Tensor] | None = None,
) -> RunRecord:
    """Train one method on ``model``'s stream (seeded) and score it against the true features.

    With ``consistency_samples`` > 0 the record also carries the decoder directions and each
    neuron's firing frequency on a fixed sample (:data:`CONSISTENCY_SEED`), for cross-seed
    consistency. ``stream_cache``: batches of this (model, seed, batch size) stream kept from an
    earlier run (see :class:`~gba_lens.training.data.SeededBatches`).
    """
    torch.manual_seed(seed)
    sae = build_sae(spec.method, model.feature_dict.hidden_dim, width, device=train.device, **dict(spec.params))
    cfg = TrainConfig(**{**asdict(train), "lr": spec.lr or train.lr})
    start = time.perf_counter()
    train_sae(sae, SeededBatches(model.sample, cfg.batch_size, seed=seed, cache=stream_cache), cfg)
    seconds = time.perf_counter() - start
    sae.eval()
    record = RunRecord(spec.label, seed, evaluate_on_synthetic(sae, model, n_samples=eval_samples), seconds, sae)
    if consistency_samples:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(CONSISTENCY_SEED)
            x = model.sample(consistency_samples).to(sae.device)
            record.frequencies = (sae.encode(x) != 0).float().mean(0).cpu()
            record.directions = sae.W_dec.detach().cpu().clone()
    return record
