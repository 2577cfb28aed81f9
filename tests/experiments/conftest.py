"""Builders for the experiment tests: tiny SAEs trained by the shared harness, the study scripts."""

import importlib.util
from pathlib import Path

import pytest
import torch

from gba_lens.training.data import SeededBatches
from gba_lens.training.methods import build_sae
from gba_lens.training.train import TrainConfig, train_sae


def relu_stream(d: int, offset: float = 0.0, batch_size: int = 64) -> SeededBatches:
    """Seeded batches of relu(N(0, 1)) + offset in ``d`` dimensions."""
    return SeededBatches(lambda n: torch.relu(torch.randn(n, d)) + offset, batch_size)


@pytest.fixture
def train_tiny():
    """``train_tiny(method, steps=10, offset=0.0, **params)``: a seeded 8 -> 32 SAE of ``method``
    trained for ``steps`` batches of 64 on :func:`relu_stream`."""

    def build(method: str, steps: int = 10, offset: float = 0.0, **params):
        torch.manual_seed(0)
        sae = build_sae(method, 8, 32, **params)
        train_sae(sae, relu_stream(8, offset), TrainConfig(total_samples=64 * steps, batch_size=64))
        return sae

    return build


SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def script():
    """``script(name)``: the module of ``scripts/<name>.py`` (the study scripts are not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
