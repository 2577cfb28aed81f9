"""Shared builders of the data tests."""

import pytest
import torch

from gba_lens.data.stdlib_corpus import stdlib_token_dataset
from gba_lens.models.stdlib_lm import load_stdlib_tokenizer

N_VAL_ROWS = 16


@pytest.fixture(scope="module")
def tokenizer():
    """The committed stdlib tokenizer."""
    return load_stdlib_tokenizer()


@pytest.fixture(scope="module")
def val_rows(tokenizer) -> torch.Tensor:
    """The first ``N_VAL_ROWS`` rows (128 tokens) of the stdlib val split."""
    ds = stdlib_token_dataset(tokenizer, split="val", max_tokens=N_VAL_ROWS * 128)
    return torch.as_tensor(ds[:]["tokens"])
