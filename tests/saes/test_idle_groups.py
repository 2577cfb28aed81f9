"""idle_groups: the lowest groups' neurons join the groups above them when their firings are worth nothing."""

import warnings

import pytest
import torch

from gba_lens.saes import idle_groups
from gba_lens.saes.firing_worth import worth_sums
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.idle_groups import IdleGroups
from gba_lens.training.methods import build_sae


def decided(worth_per_firing, firings=100.0):
    """An IdleGroups of len(worth_per_firing) groups whose window read these worths per firing,
    and its decision on 10 neurons per group (neuron m in group m // 10)."""
    rule = IdleGroups(len(worth_per_firing))
    rule.sums[0] = torch.tensor(worth_per_firing) * firings
    rule.sums[1] = firings
    group = torch.arange(10 * len(worth_per_firing)) // 10
    return rule, group, rule.decide(group)


def test_the_lower_half_of_an_idle_block_joins_as_many_groups_right_above_it():
    # average firing worth 0.4; groups 5-9 at most 0.15 of it and the last worth nothing: a block of five
    rule, group, (neurons, joins) = decided([1.5, 0.9, 0.6, 0.5, 0.25, 0.05, 0.02, 0.01, -0.02, -0.05])
    assert neurons.tolist() == list(range(70, 100))  # groups 7, 8, 9 (ceil(5 / 2) = 3 groups)
    assert joins.tolist() == [2, 3, 4] * 10  # the three groups right above the block, in turn
    assert rule.moved.tolist() == [0] * 7 + [1] * 3 and rule.finished and rule.done.item() == 1


@pytest.mark.parametrize("worths, joined", [
    ([1.0, 0.8, 0.02, -0.1], 1),  # a block of two (groups 2, 3): its last group joins the one above the block
    ([1.0, 0.8, 0.6, -0.1], 2),  # a block of one: it joins the group right above it
])
def test_small_blocks(worths, joined):
    _, _, (neurons, joins) = decided(worths)
    assert neurons.tolist() == list(range(30, 40))
    assert set(joins.tolist()) == {joined}


@pytest.mark.parametrize("worths, movers", [
    # the last group at 0.10 of the average firing's worth (0.39): idle, but worth more than about nothing
    ([1.5, 0.9, 0.6, 0.5, 0.25, 0.05, 0.02, 0.01, 0.03, 0.04], []),
    # the last group at 0.01 of it and alone idle: it moves
    ([1.5, 0.9, 0.6, 0.5, 0.25, 0.2, 0.3, 0.4, 0.3, 0.005], list(range(90, 100))),
])
def test_a_block_moves_only_if_its_last_group_is_worth_about_nothing(worths, movers):
    _, _, (neurons, _) = decided(worths)
    assert neurons.tolist() == movers


def test_nothing_moves_when_every_group_is_idle_or_none_is():
    for worths in ([-0.1, -0.2, -0.3], [1.0, 0.9, 0.8]):
        rule, _, (neurons, joins) = decided(worths)
        assert neurons.numel() == 0 and joins.numel() == 0
        assert rule.finished and not rule.moved.any()


def test_the_rule_measures_between_start_and_at_of_the_run_and_decides_once():
    rule = IdleGroups(3)
    assert [step for step in range(120) if rule.due(step, 100)] == [20]
    assert [step for step in range(400) if rule.due(step, 300)] == [60, 70, 80]
    rule.decide(torch.arange(3))
    assert not rule.due(60, 300)


def test_without_the_run_s_length_the_rule_is_off_and_says_so_once():
    rule = IdleGroups(3)
    with pytest.warns(UserWarning, match="idle_groups acts at 0.3 of the run, whose length"):
        assert not rule.due(60, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not any(rule.due(step, None) for step in range(100))


def test_a_group_s_sums_are_its_neurons_firings_worth():
    torch.manual_seed(0)
    acts = torch.relu(torch.randn(64, 12))
    decoder, residual = torch.randn(12, 5), torch.randn(64, 5)
    group = torch.arange(12) // 4
    rule = IdleGroups(3)
    rule.observe(acts, decoder, residual, group)
    per_neuron = worth_sums(acts, decoder, residual)
    assert torch.allclose(rule._batch, per_neuron.view(2, 3, 4).sum(2))
    rule.reduce_statistics(lambda tensor, op: tensor.mul_(2))  # two ranks with the same rows
    assert torch.allclose(rule._batch, 2 * per_neuron.view(2, 3, 4).sum(2))


def test_moved_neurons_take_their_new_group_s_targets_and_keep_them():
    sae = build_sae("gba", 8, 40, n_groups=4)  # find_l0 (the default): the targets are base targets x a scale
    controller = sae.bias_adaptation
    before = controller.target.clone()
    neurons, joins = torch.tensor([30, 31, 32]), torch.tensor([1, 2, 1])
    controller.move_neurons(neurons, joins)
    assert controller.group[30:33].tolist() == [1, 2, 1]
    assert torch.equal(controller.target[30:33], before[[10, 20, 10]])
    assert torch.equal(controller.target[:30], before[:30]) and torch.equal(controller.target[33:], before[33:])
    controller.l0_control.log_scale.add_(0.5)  # the next window scales every target, the moved ones as their group's
    controller.l0_control.step(controller.target, torch.zeros(40))
    assert torch.equal(controller.target[[30, 32]], controller.target[[10, 10]])
    assert controller.target[31] == controller.target[20]
    controller.move_neurons(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))  # nothing


def test_the_option_is_opt_in_and_refused_where_groups_do_not_stand_still():
    assert build_sae("gba", 8, 32).bias_adaptation.idle_groups is None  # off by default
    assert build_sae("gba", 8, 32, idle_groups=True).bias_adaptation.idle_groups is not None
    assert build_sae("gba", 8, 32, idle_groups=True, find_l0=False).bias_adaptation.idle_groups is not None
    for bad in ({"targets": "adaptive", "find_l0": False}, {"target_search": True, "find_l0": False}):
        with pytest.raises(ValueError, match="idle_groups moves neurons between the geometric groups"):
            GBATrainingSAEConfig(d_in=4, d_sae=16, idle_groups=True, **bad)
    with pytest.raises(ValueError, match="idle_groups moves neurons between the geometric groups"):
        GBATrainingSAEConfig(d_in=4, d_sae=16, n_groups=1, idle_groups=True)


def test_a_checkpoint_carries_the_decision(step_input):
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, idle_groups=True))
    sae.training_horizon = 100
    x = torch.relu(torch.randn(128, 8, generator=torch.Generator().manual_seed(1)))
    for step in (20, 30, 40):
        out = sae.training_forward_pass(step_input(x, step))
    rule = sae.bias_adaptation.idle_groups
    assert rule.sums[1].sum() > 0 and rule.finished  # measured at 20, decided at 30
    assert out.metrics["gba/idle_groups_moved"] == rule.moved.sum()
    fresh = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, idle_groups=True))
    assert not fresh.bias_adaptation.idle_groups.finished
    fresh.load_state_dict(sae.state_dict())
    assert fresh.bias_adaptation.idle_groups.finished
    assert torch.equal(fresh.bias_adaptation.group, sae.bias_adaptation.group)
    assert not [key for key in sae.to_inference_sae().state_dict() if "idle" in key]


def test_the_paper_toy_recovers_every_feature_with_the_rule():
    """Seed 0 of the paper's toy at GBA's defaults plus ``idle_groups`` (1M samples, the preset budget):
    without the rule feature 89 stays in a mixture (99.2 percent at 0.9); with it every feature has a
    decoder row at cosine >= 0.9 and the L0 stays within a quarter of the true 11.5
    (docs/experiments/prior_free.md, thirty-fifth step)."""
    from gba_lens.experiments.paper_toy import PAPER_TOY_SAE, PaperToySetup
    from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
    from gba_lens.training.data import SeededBatches
    from gba_lens.training.train import TrainConfig, train_sae

    setup = PaperToySetup()
    toy = SparseMixtureModel(SparseMixtureConfig(seed=setup.data_seed))
    torch.manual_seed(0)
    sae = build_sae("gba", toy.feature_vectors.shape[1], setup.width, **PAPER_TOY_SAE, idle_groups=True)
    train_sae(sae, SeededBatches(toy.sample, setup.batch_size, seed=0),
              TrainConfig(total_samples=1_000_000, batch_size=setup.batch_size, lr=setup.lr))
    assert sae.bias_adaptation.idle_groups.moved.sum() >= 1  # the toy's lowest groups found nothing
    features = toy.feature_vectors / toy.feature_vectors.norm(dim=1, keepdim=True)
    rows = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    assert (features @ rows.T).max(1).values.min() >= 0.9
    torch.manual_seed(1)
    x = toy.sample(20_000)
    with torch.no_grad():
        l0 = (sae.encode(x) != 0).float().sum(1).mean()
    assert abs(float(l0) / 11.5 - 1) <= 0.25


def test_the_share_is_the_module_s(monkeypatch):
    monkeypatch.setattr(idle_groups, "SHARE", 0.0)
    _, _, (neurons, _) = decided([1.5, 0.9, 0.6, 0.5, 0.25, 0.05, 0.02, 0.01, -0.02, -0.05])
    assert neurons.tolist() == list(range(90, 100))  # only groups 8, 9 are worth nothing: the last one moves


def test_a_group_that_did_not_fire_counts_as_worth_nothing():
    rule = IdleGroups(4)
    rule.sums[0] = torch.tensor([100.0, 80.0, 60.0, 0.0])
    rule.sums[1] = torch.tensor([100.0, 100.0, 100.0, 0.0])  # the last group never fired in the window
    group = torch.arange(40) // 10
    neurons, joins = rule.decide(group)
    assert neurons.tolist() == list(range(30, 40)) and set(joins.tolist()) == {2}


def test_nothing_moves_while_the_average_firing_is_worth_nothing_or_less():
    # a young SAE's firings overshoot: the average firing is worth -0.15, so every group but the first
    # reads "at most 0.15 of it" and the last far under 0.05 of it; read against no reference, nothing moves
    rule, _, (neurons, joins) = decided([0.3, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1, -0.5, -0.6])
    assert neurons.numel() == 0 and joins.numel() == 0 and rule.finished
