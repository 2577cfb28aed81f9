"""Shared builders of the model tests: the stdlib tokenizer, the stdlib LM of each kind, held-out rows."""

import pytest
import torch

from gba_lens.models import stdlib_lm as S

N_VAL_ROWS = 16


@pytest.fixture(scope="module")
def tokenizer():
    return S.load_stdlib_tokenizer()


@pytest.fixture(scope="module")
def models():
    return {kind: S.load_stdlib_lm(kind) for kind in ("hf", "hooked", "bridge")}


@pytest.fixture(scope="module")
def val_rows(tokenizer) -> torch.Tensor:
    ds = S.stdlib_token_dataset(tokenizer, split="val", max_tokens=N_VAL_ROWS * 128)
    return torch.as_tensor(ds[:]["tokens"])
