"""idle_groups: the lowest groups' neurons join the groups above them once their firings, after doing harm,
are worth nothing."""

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


class Controller:
    """What ``IdleGroups.step`` asks of a ``GroupBiasAdaptation``: the groups, and the move (recorded)."""

    def __init__(self, n_groups, per_group=10):
        self.group = torch.arange(n_groups * per_group) // per_group
        self.moves = []

    def move_neurons(self, neurons, groups):
        self.moves.append((neurons.tolist(), groups.tolist()))


def run_readings(rule, controller, measurements, horizon=10_000):
    """Feed ``rule`` one measurement per ``CHECK_EVERY`` steps, each a list of per-group worths per firing
    (100 firings per group), and return the steps at which it measured."""
    steps = []
    for i, worths in enumerate(measurements):
        step = i * idle_groups.CHECK_EVERY
        batch = torch.stack([torch.tensor(worths) * 100.0, torch.full((len(worths),), 100.0)])

        def observe(*_, batch=batch):
            rule._batch = batch.clone()

        rule.observe = observe
        before = int(rule.phase[0])
        rule.step(step, horizon, controller, None, None, lambda: None, lambda module: None)
        if int(rule.phase[0]) > before:
            steps.append(step)
    return steps


YOUNG = [-1.0] * 4  # the average firing is worth less than nothing: no reference
WORKING = [1.5, 1.0, 0.6, 0.5]
HARMFUL = [1.5, 1.0, -0.2, -0.4]  # the average 0.475: the last group at -0.84 of it
SETTLED = [1.5, 1.0, 0.02, 0.01]  # the last group 0.016 of the average (about nothing), the one above it 0.03


def test_the_lowest_groups_move_once_their_harm_is_over():
    rule, controller = IdleGroups(4), Controller(4)
    run_readings(rule, controller, [YOUNG] * 10 + [HARMFUL] * 30 + [SETTLED] * 30)
    assert controller.moves == [(list(range(30, 40)), [1] * 10)]  # a block of two: its last group moves up
    assert rule.finished and rule.moved.tolist() == [0, 0, 0, 1]
    # the decision came at the first reading in which the last group's firings are worth more than nothing
    # (after the 40 measurements before the settled ones: once all ten of the reading's are settled)
    taken = int(rule.phase[0])
    assert taken == 50
    worth, firings = rule.sums
    assert 0 < float(worth[-1] / firings[-1]) <= idle_groups.NOTHING * float(worth.sum() / firings.sum())


def test_nothing_moves_where_the_lowest_group_never_does_harm():
    rule, controller = IdleGroups(4), Controller(4)
    steps = run_readings(rule, controller, [YOUNG] * 10 + [WORKING] * 40 + [SETTLED] * 60, horizon=1000)
    assert controller.moves == [] and not rule.moved.any()
    assert rule.finished and steps[-1] == 390  # measured every CHECK_EVERY steps until LATEST (0.4) of the run
    assert steps == list(range(0, 400, idle_groups.CHECK_EVERY))


def test_harm_read_against_a_new_average_does_not_count():
    # the lowest group's harm shows only in readings that still hold measurements from before the average
    # turned positive: no reading of measurements all taken after it reads harm, so nothing moves
    rule, controller = IdleGroups(4), Controller(4)
    run_readings(rule, controller, [YOUNG] * 10 + [HARMFUL] * 5 + [SETTLED] * 60)
    assert int(rule.phase[2]) == 0 and controller.moves == []


def test_a_group_that_recovers_into_work_does_not_move():
    # harm, then the lowest group's firings are worth something: the decision is taken and nothing moves
    rule, controller = IdleGroups(4), Controller(4)
    run_readings(rule, controller, [YOUNG] * 10 + [HARMFUL] * 30 + [WORKING] * 30)
    assert rule.finished and controller.moves == [([], [])] and not rule.moved.any()


def test_nothing_moves_after_latest_of_the_run():
    rule, controller = IdleGroups(4), Controller(4)
    run_readings(rule, controller, [YOUNG] * 10 + [HARMFUL] * 30 + [SETTLED] * 30, horizon=1000)
    assert rule.finished and controller.moves == []  # the harm ended after step 400 of 1000


def test_without_the_run_s_length_the_rule_is_off_and_says_so_once():
    rule = IdleGroups(3)
    with pytest.warns(UserWarning, match="idle_groups acts only in the first 0.4 of the run, whose length"):
        assert not rule.due(60, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not any(rule.due(step, None) for step in range(100))
    assert [step for step in range(40) if rule.due(step, 100)] == [0, 10, 20, 30]


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


def test_the_option_is_on_with_find_l0_and_refused_where_groups_do_not_stand_still():
    assert build_sae("gba", 8, 32).bias_adaptation.idle_groups is not None  # on by default (with find_l0)
    assert build_sae("gba", 8, 32).cfg.idle_groups is True  # resolved in the saved config
    assert build_sae("gba", 8, 32, find_l0=False).bias_adaptation.idle_groups is None  # the paper's rule: off
    assert build_sae("gba", 8, 32, idle_groups=False).bias_adaptation.idle_groups is None
    assert build_sae("gba", 8, 32, idle_groups=True, find_l0=False).bias_adaptation.idle_groups is not None
    for unset_off in ({"targets": "adaptive"}, {"target_search": True}, {"n_groups": 1}):
        assert GBATrainingSAEConfig(d_in=4, d_sae=16, **unset_off).idle_groups is False
    for bad in ({"targets": "adaptive", "find_l0": False}, {"target_search": True, "find_l0": False}):
        with pytest.raises(ValueError, match="idle_groups moves neurons between the geometric groups"):
            GBATrainingSAEConfig(d_in=4, d_sae=16, idle_groups=True, **bad)
    with pytest.raises(ValueError, match="idle_groups moves neurons between the geometric groups"):
        GBATrainingSAEConfig(d_in=4, d_sae=16, n_groups=1, idle_groups=True)


def test_a_checkpoint_carries_the_readings_and_the_decision(step_input):
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, idle_groups=True))
    sae.training_horizon = 1000
    x = torch.relu(torch.randn(128, 8, generator=torch.Generator().manual_seed(1)))
    for step in (0, 10, 20):
        out = sae.training_forward_pass(step_input(x, step))
    rule = sae.bias_adaptation.idle_groups
    assert int(rule.phase[0]) == 3 and rule.ring[:3, 1].sum() > 0 and not rule.finished
    assert out.metrics["gba/idle_groups_moved"] == 0
    fresh = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, idle_groups=True))
    fresh.load_state_dict(sae.state_dict())
    assert torch.equal(fresh.bias_adaptation.idle_groups.ring, rule.ring)
    assert torch.equal(fresh.bias_adaptation.idle_groups.phase, rule.phase)
    sae.training_forward_pass(step_input(x, 400))  # past LATEST of the run: decided, nothing moved
    assert rule.finished
    fresh.load_state_dict(sae.state_dict())
    assert fresh.bias_adaptation.idle_groups.finished
    assert torch.equal(fresh.bias_adaptation.group, sae.bias_adaptation.group)
    assert not [key for key in sae.to_inference_sae().state_dict() if "idle" in key]


def test_the_paper_toy_recovers_every_feature_at_the_defaults():
    """Seed 0 of the paper's toy at GBA's defaults (1M samples, the preset budget): without
    ``idle_groups`` feature 89 stays in a mixture (99.2 percent at 0.9); with it the lowest groups' neurons
    move once their harm is over (about step 590 of 1,953), every feature has a decoder row at cosine
    >= 0.9 and the L0 stays within a quarter of the true 11.5 (docs/experiments/prior_free.md,
    thirty-sixth step)."""
    from gba_lens.experiments.paper_toy import PAPER_TOY_SAE, PaperToySetup
    from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
    from gba_lens.training.data import SeededBatches
    from gba_lens.training.train import TrainConfig, train_sae

    setup = PaperToySetup()
    toy = SparseMixtureModel(SparseMixtureConfig(seed=setup.data_seed))
    torch.manual_seed(0)
    sae = build_sae("gba", toy.feature_vectors.shape[1], setup.width, **PAPER_TOY_SAE)
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
