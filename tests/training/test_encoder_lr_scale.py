"""encoder_lr_scale: the encoder learns faster than the other weights once 0.4 of the run is over."""

import warnings

import pytest
import torch

from gba_lens.data import SeededBatches
from gba_lens.saes.gba_options import GBAOptions
from gba_lens.training.train import TrainConfig, train_sae
from gba_lens.training.trainer import ENCODER_LR_FROM, GBATrainer
from training_builders import relu_sampler, step_input, tiny_gba_sae

STEPS, DECAY, LR = 20, 10, 1e-2


@pytest.fixture
def rates(monkeypatch):
    """Each optimiser step's learning rate per parameter group, as the step uses them."""
    seen = []
    init = GBATrainer.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.optimizer.register_step_pre_hook(lambda opt, *_: seen.append([g["lr"] for g in opt.param_groups]))

    monkeypatch.setattr(GBATrainer, "__init__", recording)
    return seen


def _train(record=None, **options):
    """A tiny GBA SAE (d_in 6, 16 latents) trained STEPS steps, the learning rate decaying over the last
    DECAY; ``record``: a list that gets the encoder weights each step's forward pass sees."""
    sae = tiny_gba_sae(6, 16, n_groups=2, **options)
    if record is not None:
        forward = sae.training_forward_pass

        def recorded(step_input):  # the keyword SAELens passes
            record.append(sae.W_enc.detach().clone())
            return forward(step_input)

        sae.training_forward_pass = recorded
    cfg = TrainConfig(total_samples=STEPS * 64, batch_size=64, lr=LR, lr_decay_steps=DECAY, device="cpu")
    train_sae(sae, SeededBatches(relu_sampler(6), 64, seed=0), cfg)
    return sae


def test_the_encoder_has_its_own_learning_rate_scale_times_the_others_from_0_4_of_the_run(rates):
    _train()  # the defaults: find_l0, so encoder_lr_scale 2
    assert all(len(step) == 2 for step in rates) and len(rates) == STEPS
    others = [step[0] for step in rates]
    # SAELens's schedule for the other weights: constant, then linear to 0 over the last DECAY steps
    assert others == pytest.approx([LR] * (STEPS - DECAY) + [LR * (1 - i / DECAY) for i in range(DECAY)])
    switch = round(ENCODER_LR_FROM * STEPS)  # step 8
    expected = [o * (2.0 if i >= switch else 1.0) for i, o in enumerate(others)]
    assert [step[1] for step in rates] == pytest.approx(expected)


def test_the_run_is_the_one_learning_rate_run_until_0_4_and_then_leaves_it():
    fast, one = [], []
    _train(record=fast)
    _train(record=one, encoder_lr_scale=1.0)
    switch = round(ENCODER_LR_FROM * STEPS)
    # the forward pass of step i sees the encoder after i updates: the same through step `switch`
    assert all(torch.equal(a, b) for a, b in zip(fast[:switch + 1], one[:switch + 1]))
    assert not torch.equal(fast[switch + 1], one[switch + 1])
    # and the faster encoder moved further over the late steps
    late = lambda record: (record[-1] - record[switch]).norm()  # noqa: E731
    assert late(fast) > 1.2 * late(one)


def test_the_paper_s_rule_trains_every_weight_at_one_rate(rates):
    _train(find_l0=False, valley_thresholds=False)
    assert all(len(step) == 1 for step in rates)


def test_it_is_2_with_find_l0_and_1_with_the_paper_s_rule():
    assert GBAOptions().gba_options()["encoder_lr_scale"] == 2.0
    assert GBAOptions(find_l0=False).gba_options()["encoder_lr_scale"] == 1.0
    assert GBAOptions(target_l0=8.0).gba_options()["encoder_lr_scale"] == 2.0  # the defaults told their level
    assert GBAOptions(target_l0=8.0, gating="relu").gba_options()["encoder_lr_scale"] == 1.0
    assert GBAOptions(find_l0=False, encoder_lr_scale=3.0).gba_options()["encoder_lr_scale"] == 3.0
    assert tiny_gba_sae(6, 16).cfg.encoder_lr_scale == 2.0  # the SAE's config holds the resolved value


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_scale_that_is_not_a_positive_number_is_refused(bad):
    with pytest.raises(ValueError, match="encoder_lr_scale must be a finite number > 0, got"):
        GBAOptions(encoder_lr_scale=bad)


def test_another_trainer_keeps_one_rate_and_the_sae_says_so_once():
    x = relu_sampler(6)(32)
    sae = tiny_gba_sae(6, 16, n_groups=2, anneal_with_lr=False)
    with pytest.warns(UserWarning, match="encoder_lr_scale=2 trains the encoder faster late in the run with gba_lens"):
        sae.training_forward_pass(step_input(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the other rules' own notes on the missing run length
        warnings.filterwarnings("error", message="encoder_lr_scale")
        sae.training_forward_pass(step_input(x))
        tiny_gba_sae(6, 16, n_groups=2, anneal_with_lr=False, encoder_lr_scale=1.0).training_forward_pass(step_input(x))
