"""Shared builders of the LM-training tests."""

import pytest

from gba_lens.models.stdlib_lm import load_stdlib_lm


@pytest.fixture(scope="module")
def model():
    """The offline stdlib LM as a HookedTransformer (one per test module)."""
    return load_stdlib_lm("hooked")
