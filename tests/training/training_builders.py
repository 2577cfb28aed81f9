"""Shared builders of the training tests: a small seeded GBA SAE and a non-negative sampler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig


def tiny_gba_sae(d_in: int, d_sae: int, *, n_groups: int = 4, seed: int = 0, **options: Any) -> GBATrainingSAE:
    """A fresh GBA SAE, initialised under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return GBATrainingSAE(GBATrainingSAEConfig(d_in=d_in, d_sae=d_sae, n_groups=n_groups, **options))


def relu_sampler(d_in: int, scale: float = 1.0) -> Callable[[int], torch.Tensor]:
    """``n -> relu(randn(n, d_in)) * scale`` (draws from torch's global RNG, as SeededBatches expects)."""

    def sample(n: int) -> torch.Tensor:
        return torch.relu(torch.randn(n, d_in)) * scale

    return sample
