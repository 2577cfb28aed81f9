"""anneal_with_lr: the bias rule's steps follow the learning rate, so that the thresholds settle as the weights do."""

import warnings

import pytest
import torch

from gba_lens.data import SeededBatches
from gba_lens.saes.bias_adaptation import GroupBiasAdaptation
from gba_lens.saes.gba_options import GBAOptions
from gba_lens.saes.valley_thresholds import ValleyThresholds
from gba_lens.training.train import TrainConfig, train_sae
from training_builders import relu_sampler, step_input, tiny_gba_sae

STEPS, DECAY, WARM_UP = 20, 10, 4


def test_the_rule_moves_the_biases_by_rate_times_its_steps():
    fired = torch.tensor([50.0, 0.0, 1.0])  # over its target, dead, under its target (live)
    peak = torch.tensor([2.0, 0.0, 0.5])
    moves = []
    for anneal, share in ((False, 0.25), (True, 1.0), (True, 0.25)):
        rule = GroupBiasAdaptation(3, n_groups=1, highest_target=0.1, lowest_target=0.1, anneal_with_lr=anneal)
        rule.lr_share = share
        bias = torch.full((3,), -0.5)
        rule.apply_rule(bias, fired, peak, 100)
        moves.append(bias + 0.5)
    rbar = (2.0 + 0.5) / 2  # the group's mean positive peak
    assert moves[0].tolist() == pytest.approx([-0.01 * 2.0, 0.01 * rbar, 0.0])  # without the option: full steps
    assert torch.equal(moves[1], moves[0])
    assert moves[2].tolist() == pytest.approx((0.25 * moves[0]).tolist(), abs=1e-7)


def test_a_valley_window_moves_a_threshold_rate_of_the_way_to_its_valley():
    torch.manual_seed(0)
    n = 10_240
    feature = torch.rand(n) < 0.05
    u = (torch.randn(n) * 0.05 + feature * 0.8)[:, None]  # interference around 0, the feature at 0.8
    ends = []
    for rate in (1.0, 0.5):
        valley = ValleyThresholds(1)
        valley.scale.fill_(1.0)
        for rows in u.split(512):
            valley.observe(rows - 0.1, torch.full((1,), -0.1), rows.shape[0])
        bias = torch.full((1,), -0.1)
        assert valley.apply(bias, -1.0, 0.0, rate).has_valley.item()
        ends.append(bias.item())
    assert 0.2 < -ends[0] < 0.7  # all the way: the valley between the two modes
    assert ends[1] == pytest.approx((-0.1 + ends[0]) / 2)  # half of the way


def _train(anneal, decay=DECAY, warm_up=0, record=None, **options):
    """A tiny GBA SAE (d_in 6, 16 latents) trained STEPS steps; ``record``: a list that gets
    (lr_share, bias) of every step."""
    sae = tiny_gba_sae(6, 16, n_groups=2, anneal_with_lr=anneal, **options)
    if record is not None:
        forward = sae.training_forward_pass

        def recorded(step_input):  # the keyword SAELens passes
            out = forward(step_input)
            record.append((sae.bias_adaptation.lr_share, sae.b_enc.detach().clone()))
            return out

        sae.training_forward_pass = recorded
    cfg = TrainConfig(total_samples=STEPS * 64, batch_size=64, lr=1e-2, lr_decay_steps=decay,
                      lr_warm_up_steps=warm_up, device="cpu")
    train_sae(sae, SeededBatches(relu_sampler(6), 64, seed=0), cfg)
    return sae


def test_the_trainer_gives_the_sae_the_learning_rate_over_its_peak():
    record = []
    _train(True, warm_up=WARM_UP, record=record)
    shares = [share for share, _ in record]
    # 1 through the warm-up (the rate climbs to its peak there) and the constant part, then SAELens's
    # linear decay to 0: 1, 0.9, ..., 0.1 over the last DECAY steps
    assert shares[:STEPS - DECAY] == [1.0] * (STEPS - DECAY)
    assert shares[STEPS - DECAY:] == pytest.approx([1 - i / DECAY for i in range(DECAY)])


def test_with_a_decaying_learning_rate_the_last_steps_barely_move_the_biases():
    moved = {}
    for anneal in (True, False):
        record = []
        _train(anneal, record=record)
        biases = torch.stack([bias for _, bias in record])
        moved[anneal] = (biases[1:] - biases[:-1]).abs().amax(1)  # each step's largest move
    before_decay = STEPS - DECAY - 1
    # the same run until the decay starts
    assert torch.equal(moved[True][:before_decay], moved[False][:before_decay])
    # then the annealed rule's steps shrink with the learning rate (0.3, 0.2, 0.1 of the full step over the
    # last three steps; the two runs' biases and peaks differ by then)
    assert moved[True][-3:].max() <= 0.4 * moved[False][-3:].max()
    assert moved[True][-1] <= 0.15 * moved[False][-1]


def test_with_a_constant_learning_rate_nothing_changes():
    on, off = _train(True, decay=0), _train(False, decay=0)
    assert all(torch.equal(a, b) for a, b in zip(on.state_dict().values(), off.state_dict().values()))


def test_it_is_on_with_find_l0_and_off_with_the_paper_s_rule():
    assert GBAOptions().gba_options()["anneal_with_lr"] is True
    assert GBAOptions(find_l0=False).gba_options()["anneal_with_lr"] is False
    assert GBAOptions(target_l0=8.0).gba_options()["anneal_with_lr"] is True  # the defaults told their level
    assert GBAOptions(target_l0=8.0, gating="relu").gba_options()["anneal_with_lr"] is False
    assert GBAOptions(find_l0=False, anneal_with_lr=True).gba_options()["anneal_with_lr"] is True
    assert tiny_gba_sae(6, 16).cfg.anneal_with_lr is True  # the SAE's config holds the resolved value


def test_without_a_trainer_that_gives_the_learning_rate_the_rule_keeps_its_full_steps_and_says_so_once():
    sae = tiny_gba_sae(6, 16, n_groups=2)
    x = relu_sampler(6)(32)
    step = step_input(x, log=False)
    with pytest.warns(UserWarning, match="anneal_with_lr scales the bias rule's steps by the learning rate, which this"):
        sae.training_forward_pass(step)
    assert sae.bias_adaptation.rate == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sae.training_forward_pass(step)


def test_the_paper_s_rule_asked_to_anneal_does_and_logs_its_rate():
    record = []
    sae = _train(True, record=record, find_l0=False, valley_thresholds=False)
    assert record[-1][0] == pytest.approx(1 / DECAY)  # the last step's share
    x = relu_sampler(6)(32)
    step = step_input(x, log=True)
    assert sae.training_forward_pass(step).metrics["gba/rule_rate"] == pytest.approx(1 / DECAY)
    assert "gba/rule_rate" not in _train(False, decay=0).training_forward_pass(step).metrics
