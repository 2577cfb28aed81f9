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


@pytest.fixture
def resumed_state(step_input):
    """``resumed_state(make_sae, batches, split)``: the state dict of an SAE trained on ``batches[:split]``,
    saved, loaded into a fresh ``make_sae()`` and trained on the rest (to compare with an unbroken run)."""

    def run(make_sae, batches, split):
        first = make_sae()
        for step, x in enumerate(batches[:split]):
            first.training_forward_pass(step_input(x, step))
        resumed = make_sae()
        resumed.load_state_dict(first.state_dict())
        for step, x in enumerate(batches[split:], start=split):
            resumed.training_forward_pass(step_input(x, step))
        return resumed.state_dict()

    return run
