"""Target search: turning decoder rows raise their neuron's target, and go back in the return."""

import pytest
import torch

from gba_lens.data.batches import SeededBatches
from gba_lens.saes import target_search
from gba_lens.saes.bias_adaptation import GroupBiasAdaptation
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.gba_options import GBAOptions
from gba_lens.saes.target_search import TargetSearch
from gba_lens.training.train import TrainConfig, train_sae

GROUP_TARGET = torch.tensor([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
HORIZON = 1000


def _turned(decoder: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """The decoder with ``rows`` turned by 90 degrees (cosine 0 with before), the others scaled."""
    turned = 2.0 * decoder  # norms do not count
    for m in rows:
        turned[m] = torch.roll(decoder[m], 1) - decoder[m] * (torch.roll(decoder[m], 1) @ decoder[m])
    return turned


def test_first_check_only_takes_the_snapshot_and_nothing_rises_before_first_raise():
    decoder = torch.nn.functional.normalize(torch.randn(6, 5), dim=1)
    search = TargetSearch(6, 5)
    assert search.check(decoder, GROUP_TARGET, 0, HORIZON) is None
    cosine = search.check(_turned(decoder, [4]), GROUP_TARGET, target_search.FIRST_RAISE - 1, HORIZON)
    assert cosine[4] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(cosine[[0, 1, 2, 3, 5]], torch.ones(5), atol=1e-6)
    assert torch.equal(search.scale, torch.ones(6))  # turning, but before the search begins
    assert search.turning_checks.tolist() == [0, 0, 0, 0, 1, 0]


def _tilted(decoder: torch.Tensor, rows: list[int], cosine: float) -> torch.Tensor:
    """The unit decoder with ``rows`` turned to ``cosine`` with before."""
    orthogonal = torch.nn.functional.normalize(_turned(decoder, rows), dim=1)
    tilted = decoder.clone()
    tilted[rows] = cosine * decoder[rows] + (1 - cosine**2) ** 0.5 * orthogonal[rows]
    return tilted


def _checks(search: TargetSearch, decoder: torch.Tensor, turning_rows: list[list[int]], step: int) -> torch.Tensor:
    """One check per entry of ``turning_rows`` (the rows turned before it), every CHECK_INTERVAL steps
    from ``step``; returns the decoder at the last check."""
    for rows in turning_rows:
        decoder = torch.nn.functional.normalize(_turned(decoder, rows), dim=1)
        search.check(decoder, GROUP_TARGET, step, HORIZON)
        step += target_search.CHECK_INTERVAL
    return decoder


def test_neurons_that_keep_turning_double_up_to_the_highest_target_and_the_steady_keep_theirs():
    decoder = torch.nn.functional.normalize(torch.randn(6, 5), dim=1)
    search = TargetSearch(6, 5)
    search.check(decoder, GROUP_TARGET, 0, HORIZON)
    n = target_search.TURNING_CHECKS
    # neurons 1, 3 and 4 turn at every check; neuron 5 at all but every n-th, so never n in a row
    # neuron 2 drifts at every check, but less than a turn (cosine between the two thresholds)
    drift = (target_search.TURNING_COSINE + target_search.STEADY_COSINE) / 2
    pattern = [[1, 3, 4] + ([5] if (i + 1) % n else []) for i in range(n + 3)]
    step = target_search.CHECK_INTERVAL
    for rows in pattern:
        decoder = _tilted(torch.nn.functional.normalize(_turned(decoder, rows), dim=1), [2], drift)
        assert search.check(decoder, GROUP_TARGET, step, HORIZON)[2].item() == pytest.approx(drift, abs=1e-5)
        step += target_search.CHECK_INTERVAL
    assert search.turning_checks.tolist() == [0, n + 3, 0, n + 3, n + 3, (n + 3) % n]
    assert search.scale[[0, 2, 5]].tolist() == [1.0, 1.0, 1.0]  # steady, drifting, or turning with pauses
    assert search.scale[1].item() == pytest.approx(1.0)  # already at the highest target: 0.1 / 0.1
    assert search.scale[3].item() == pytest.approx(10.0)  # 0.01 -> 0.02, 0.04, 0.08, then the 0.1 ceiling
    assert search.scale[4].item() == pytest.approx(16.0)  # 0.001 doubled at the last four checks
    assert search.targets(GROUP_TARGET).tolist() == pytest.approx([0.1, 0.1, 0.01, 0.1, 0.016, 0.001])


def test_in_the_return_the_still_turning_go_back_and_the_settled_keep_their_raise():
    decoder = torch.nn.functional.normalize(torch.randn(6, 5), dim=1)
    search = TargetSearch(6, 5)
    search.check(decoder, GROUP_TARGET, 0, HORIZON)
    decoder = _checks(search, decoder, [[2, 3, 4]] * target_search.TURNING_CHECKS, target_search.FIRST_RAISE)
    assert search.scale[[2, 3, 4]].tolist() == [2.0, 2.0, 2.0]
    back = int(target_search.RETURN_FROM * HORIZON)
    drift = (target_search.TURNING_COSINE + target_search.STEADY_COSINE) / 2
    # 3 settled, 4 still turns, 2 drifts: too little to be raised, too much to keep its raise
    decoder = _tilted(torch.nn.functional.normalize(_turned(decoder, [4]), dim=1), [2], drift)
    search.check(decoder, GROUP_TARGET, back, HORIZON)
    assert search.scale[[2, 3, 4]].tolist() == [1.0, 2.0, 1.0]
    assert search.due(back - back % target_search.CHECK_INTERVAL) and not search.due(target_search.CHECK_INTERVAL + 1)


def test_a_checkpoint_without_the_turning_count_loads_with_a_warning_and_counts_from_zero():
    search = TargetSearch(6, 5)
    search.scale.fill_(2.0)
    state = {k: v for k, v in search.state_dict().items() if k != "turning_checks"}
    resumed = TargetSearch(6, 5)
    resumed.turning_checks.fill_(3.0)
    with pytest.warns(UserWarning, match="predates the count of turning checks"):
        resumed.load_state_dict(state)
    assert torch.equal(resumed.scale, torch.full((6,), 2.0))
    assert torch.equal(resumed.turning_checks, torch.zeros(6))
    assert "turning_checks" not in state  # the caller's dict is left as it was


def test_the_rule_holds_a_raised_neuron_to_its_own_target():
    """A neuron firing above its group's target but under its raised one is left alone; without the
    search the same neuron is lowered."""
    search = TargetSearch(4, 3)
    search.scale.copy_(torch.tensor([1.0, 1.0, 4.0, 1.0]))  # groups' targets 0.1, 0.1, 0.01, 0.01
    rules = [GroupBiasAdaptation(4, n_groups=2, highest_target=0.1, lowest_target=0.01, target_search=search),
             GroupBiasAdaptation(4, n_groups=2, highest_target=0.1, lowest_target=0.01)]
    for rule, expected in zip(rules, [[-0.5, -0.5, -0.5, -0.52], [-0.5, -0.5, -0.52, -0.52]]):
        bias = torch.full((4,), -0.5)
        rule.apply_rule(bias, torch.full((4,), 2.0), torch.full((4,), 2.0), 100)  # every neuron fires 0.02
        assert bias.tolist() == pytest.approx(expected)  # neuron 2: target 0.04 with the search, 0.01 without
    assert rules[0].neuron_targets.tolist() == pytest.approx([0.1, 0.1, 0.04, 0.01])
    assert rules[0].group_targets.tolist() == pytest.approx([0.1, 0.01])  # the groups', before any scale


def test_a_requested_l0_and_the_search_are_refused_together():
    with pytest.raises(ValueError, match="target_l0 and target_search"):
        GBAOptions(target_l0=4.0, target_search=True)


def test_an_sae_trained_without_its_horizon_stops_before_its_first_step(step_input):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=16, n_groups=2, target_search=True))
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with pytest.raises(ValueError, match="target_search needs the run's length"):
        sae.training_forward_pass(step_input(torch.randn(32, 8)))
    assert all(torch.equal(before[k], v) for k, v in sae.state_dict().items())  # nothing moved


def test_logging_steps_report_the_share_of_raised_neurons(step_input):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=16, n_groups=2, target_search=True))
    sae.training_horizon = 100
    sae.bias_adaptation.target_search.scale[:4] = 2.0
    metrics = sae.training_forward_pass(step_input(torch.randn(32, 8) + 1)).metrics
    assert metrics["gba/search_raised_fraction"].item() == pytest.approx(0.25)


@pytest.mark.filterwarnings("ignore:GBA's L0 was still falling")  # 40 steps: the L0 has not settled
def test_training_raises_turning_neurons_returns_them_and_exports_a_plain_sae(monkeypatch):
    monkeypatch.setattr(target_search, "CHECK_INTERVAL", 5)
    monkeypatch.setattr(target_search, "FIRST_RAISE", 5)
    monkeypatch.setattr(target_search, "TURNING_COSINE", 1.01)  # every neuron turns: all are raised
    monkeypatch.setattr(target_search, "STEADY_COSINE", 1.01)  # and none is steady: all go back
    monkeypatch.setattr(target_search, "TURNING_CHECKS", 1)  # from the first check on
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=16, n_groups=4, target_search=True))
    sample = lambda n: torch.relu(torch.randn(n, 8)) * 3  # noqa: E731
    trainer = train_sae(sae, SeededBatches(sample, 32, seed=1),
                        TrainConfig(total_samples=40 * 32, batch_size=32, lr=1e-2, lr_decay_steps=10))
    assert sae.training_horizon == 40  # the run's steps
    scale = sae.bias_adaptation.target_search.scale
    # checks at 5 ... 25 raise (30 = 0.75 x 40 starts the return); 30, 35 return every neuron
    assert torch.equal(scale, torch.ones(16))
    assert trainer.n_training_steps == 40
    monkeypatch.setattr(target_search, "RETURN_FROM", 2.0)  # no return: the raises stay
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=16, n_groups=4, target_search=True))
    train_sae(sae, SeededBatches(sample, 32, seed=1),
              TrainConfig(total_samples=40 * 32, batch_size=32, lr=1e-2, lr_decay_steps=10))
    targets = sae.bias_adaptation.neuron_targets
    assert torch.allclose(targets, torch.full((16,), 0.1))  # 7 doublings reach the highest target
    assert (sae.bias_adaptation.target_search.scale > 1).sum() == 12  # the top group was there already
    state = sae.state_dict()
    assert "bias_adaptation.target_search.previous" in state and "bias_adaptation.target_search.scale" in state
    inference = sae.to_inference_sae()
    assert not any("target_search" in key for key in inference.state_dict())
