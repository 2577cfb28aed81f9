"""Fixtures of the adapter tests."""

from __future__ import annotations

import warnings

import pytest
import torch

from adapter_builders import D_VOCAB

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, D_VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
