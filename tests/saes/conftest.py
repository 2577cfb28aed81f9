"""Builders for the SAE tests."""

import pytest
from sae_lens.saes.sae import TrainStepInput


@pytest.fixture
def step_input():
    """``step_input(x, step=0)``: the SAELens ``TrainStepInput`` of one training step on ``x``."""

    def build(x, step=0):
        return TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=step,
                              is_logging_step=True)

    return build
