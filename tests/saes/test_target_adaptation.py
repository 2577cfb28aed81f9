"""The adaptive target rule (``targets="adaptive"``) on crafted statistics."""

import math

import pytest
import torch

from gba_lens.saes.bias_adaptation import GroupBiasAdaptation
from gba_lens.saes.gba import GBAOptions, GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.target_adaptation import INITIAL_AVERAGE, adapt_group_targets


def _adaptive(**kw):
    # 2 groups of 3 neurons: targets 0.1 (neurons 0-2) and 0.01 (neurons 3-5).
    return GroupBiasAdaptation(6, n_groups=2, highest_target=0.1, lowest_target=0.01, targets="adaptive", **kw)


def test_saturated_groups_rise_slack_groups_fall_by_the_documented_step():
    target = torch.tensor([0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    # Group 0: two neurons held at target, one alive under it -> drive (2 - 1) / 3.
    # Group 1: one slack, one dead (no vote), one in between (no vote) -> drive -1 / 3.
    average = torch.tensor([0.09, 0.1, 0.02, 0.003, 0.0, 0.007])
    frequency = average.clone()  # the window agrees with the average: the average stays put
    drive = adapt_group_targets(target, group, average, frequency, 2, beta=0.01, eta=0.3)
    assert drive.tolist() == pytest.approx([1 / 3, -1 / 3])
    assert torch.equal(average, frequency)
    expected = [0.1 * math.exp(0.3 / 3)] * 3 + [0.01 * math.exp(-0.3 / 3)] * 3
    assert target.tolist() == pytest.approx(expected, rel=1e-6)


def test_average_moves_by_beta_and_targets_stay_in_bounds():
    target = torch.tensor([0.45, 2e-4])
    group = torch.tensor([0, 1])
    average = torch.tensor([0.45, 0.5e-4])     # saturated / slack
    frequency = torch.tensor([0.5, 0.0])
    adapt_group_targets(target, group, average, frequency, 2, beta=0.5, eta=10.0, bounds=(1e-4, 0.5))
    assert average.tolist() == pytest.approx([0.475, 0.25e-4])
    assert target.tolist() == pytest.approx([0.5, 1e-4])  # clamped to the bounds


def test_no_votes_before_the_average_has_data():
    ctl = _adaptive()
    assert torch.allclose(ctl.average, INITIAL_AVERAGE * ctl.target)
    before = ctl.target.clone()
    drive = adapt_group_targets(ctl.target, ctl.group, ctl.average.clone(), ctl.average.clone(), 2)
    assert drive.tolist() == [0.0, 0.0] and torch.equal(ctl.target, before)


def test_update_moves_targets_in_adaptive_mode_only():
    y = torch.full((100, 6), -0.5)
    y[:50, :3] = 1.0  # group 0 fires 50% of the time: far above its target 0.1
    geometric = GroupBiasAdaptation(6, n_groups=2, highest_target=0.1, lowest_target=0.01)
    adaptive = _adaptive()
    for ctl in (geometric, adaptive):
        for _ in range(100):
            ctl.observe(y)
            ctl.update(torch.full((6,), -0.2))
    assert geometric.group_targets.tolist() == pytest.approx([0.1, 0.01])
    assert not hasattr(geometric, "average")  # default mode: no extra state in checkpoints
    assert adaptive.group_targets[0] > 0.1   # saturated group raised
    # group 1 never fires: its averages decay through the slack band, so it can only be lowered
    assert adaptive.group_targets[1] < 0.01


def test_adaptive_statistics_still_reduce_and_the_step_is_identical_on_every_rank():
    y = torch.randn(200, 6)
    rank0, rank1, single = _adaptive(), _adaptive(), _adaptive()
    rank0.observe(y[::2])
    rank1.observe(y[1::2])
    single.observe(y)
    peers = {id(t): u for t, u in zip(rank0.buffers(), rank1.buffers())}

    def fake_all_reduce(tensor, op):
        tensor.copy_(tensor + peers[id(tensor)] if op == "sum" else torch.maximum(tensor, peers[id(tensor)]))

    rank0.reduce_statistics(fake_all_reduce)
    b0, b1 = torch.full((6,), -0.3), torch.full((6,), -0.3)
    rank0.update(b0)
    single.update(b1)
    assert torch.equal(b0, b1)
    assert torch.equal(rank0.target, single.target) and torch.equal(rank0.average, single.average)


def test_default_is_geometric_and_bad_modes_fail_in_one_line():
    assert GBAOptions().targets == "geometric"
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=4, d_sae=8, n_groups=2))
    assert sae.bias_adaptation.targets == "geometric"
    assert not any(k.endswith("average") for k in sae.state_dict())
    with pytest.raises(ValueError, match="targets must be"):
        GBAOptions(targets="histogram")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targets must be"):
        GroupBiasAdaptation(8, targets="histogram")


def test_single_group_ba_ignores_adaptive():
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=4, d_sae=8, n_groups=1, targets="adaptive"))
    assert sae.bias_adaptation.targets == "geometric"


def test_adaptive_sae_trains_and_its_state_round_trips(step_input):
    torch.manual_seed(0)
    cfg = GBATrainingSAEConfig(d_in=8, d_sae=16, n_groups=4, targets="adaptive")
    sae = GBATrainingSAE(cfg)
    for step in range(20):
        sae.training_forward_pass(step_input(torch.randn(64, 8), step))
    assert not torch.allclose(sae.bias_adaptation.target, GBATrainingSAE(cfg).bias_adaptation.target)
    clone = GBATrainingSAE(cfg)
    clone.load_state_dict(sae.state_dict())
    assert torch.equal(clone.bias_adaptation.target, sae.bias_adaptation.target)
    assert torch.equal(clone.bias_adaptation.average, sae.bias_adaptation.average)
