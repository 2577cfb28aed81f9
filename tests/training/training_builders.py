"""Shared builders of the training tests: a small seeded GBA SAE, a non-negative sampler, a stream that fails at a batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gba_lens.compat import TrainStepInput
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig


def tiny_gba_sae(d_in: int, d_sae: int, *, n_groups: int = 4, seed: int = 0, **options: Any) -> GBATrainingSAE:
    """A fresh GBA SAE, initialised under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return GBATrainingSAE(GBATrainingSAEConfig(d_in=d_in, d_sae=d_sae, n_groups=n_groups, **options))


def step_input(x: torch.Tensor, log: bool = False) -> TrainStepInput:
    """The ``TrainStepInput`` of one step on ``x`` outside a trainer (step 0)."""
    return TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=log)


SEARCH_CONSTANTS = {"CHECK_INTERVAL": 3, "FIRST_RAISE": 3, "TURNING_COSINE": 0.999, "TURNING_CHECKS": 2,
                    "STEADY_COSINE": 0.999}
"""``target_search`` in the training tests: a check every 3 steps from the start, a raise after two
checks in a row under 0.999, so that a run of about 24 steps raises some neurons and returns some."""


def use_search_constants(set_attribute: Callable[[Any, str, Any], None] = setattr) -> None:
    """Set :data:`SEARCH_CONSTANTS` on :mod:`gba_lens.saes.target_search` (``monkeypatch.setattr`` in a
    test, so that they are undone after it; plain ``setattr`` in a worker process)."""
    from gba_lens.saes import target_search

    for name, value in SEARCH_CONSTANTS.items():
        set_attribute(target_search, name, value)


def relu_sampler(d_in: int, scale: float = 1.0) -> Callable[[int], torch.Tensor]:
    """``n -> relu(randn(n, d_in)) * scale`` (draws from torch's global RNG, as SeededBatches expects)."""

    def sample(n: int) -> torch.Tensor:
        return torch.relu(torch.randn(n, d_in)) * scale

    return sample


class InterruptedAt:
    """A seekable batch stream that calls ``at_batch()`` when asked for batch ``n`` (to raise,
    hang or tamper, as a failing process would), then goes on."""

    def __init__(self, inner: Any, n: int, at_batch: Callable[[], None]):
        self.inner, self.n, self.at_batch = inner, n, at_batch

    def seek(self, i: int) -> None:
        self.inner.seek(i)

    def __iter__(self) -> InterruptedAt:
        return self

    def __next__(self) -> torch.Tensor:
        if self.inner.index == self.n:
            self.at_batch()
        return next(self.inner)


class Killed(Exception):
    """What :func:`dies_at` raises: a process killed mid-run."""


def dies_at(inner: Any, n: int) -> InterruptedAt:
    """A data stream that dies (like a killed process) when asked for batch ``n`` (-1: never, the same
    data as a stream that dies)."""

    def die() -> None:
        raise Killed

    return InterruptedAt(inner, n, die)
