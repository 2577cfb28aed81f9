"""Builders for the command-line tests."""

import pytest
import torch

from gba_lens.training.data import save_activations


@pytest.fixture
def activations_file(tmp_path):
    """A small safetensors activation file ([4096, 12], non-negative) and its tensor."""
    acts = torch.relu(torch.randn(4096, 12)) * 3
    path = tmp_path / "acts.safetensors"
    save_activations(path, acts, hook_name="blocks.0.hook_resid_pre")
    return path, acts
