"""The GBA bias rule on crafted statistics."""

import pytest
import torch

from gba_lens.saes.bias_adaptation import GroupBiasAdaptation, group_index, group_targets


def test_group_targets_are_geometric_from_htf_to_ltf():
    p = group_targets(10, 0.1, 1e-3)
    assert p.shape == (10,)
    assert p[0].item() == pytest.approx(0.1)
    assert p[-1].item() == pytest.approx(1e-3)
    ratios = p[1:] / p[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    assert ratios[0].item() == pytest.approx((1e-3 / 0.1) ** (1 / 9))
    assert group_targets(1, 0.2, 0.01).tolist() == [0.2]  # single-group BA uses HTF
    with pytest.raises(ValueError):
        group_targets(3, 0.01, 0.1)  # LTF above HTF


def test_groups_are_contiguous_and_equal():
    g = group_index(20, 4)
    assert g.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    with pytest.raises(ValueError):
        group_index(3, 4)


def _controller(**kw):
    # 2 groups of 3 neurons: targets 0.1 (neurons 0-2) and 0.01 (neurons 3-5).
    return GroupBiasAdaptation(6, n_groups=2, highest_target=0.1, lowest_target=0.01, **kw)


def _crafted_pre_acts():
    """100 samples of y = u + b for 6 neurons with known firing counts and peaks."""
    y = torch.full((100, 6), -0.5)
    y[:50, 0] = 2.0         # neuron 0: fires 50% (> 0.1), peak 2.0   -> over-active
    y[:, 1] = -0.1          # neuron 1: never fires                   -> dead
    y[:5, 2] = 0.4          # neuron 2: fires 5% (< 0.1, > eps)       -> unchanged
    y[:1, 3] = 0.8          # neuron 3: fires 1% (not > 0.01)         -> unchanged
    y[:3, 4] = 1.5          # neuron 4: fires 3% (> 0.01), peak 1.5  -> over-active
    y[:, 5] = -2.0          # neuron 5: dead
    return y


def test_two_branch_rule_on_crafted_statistics():
    ctl = _controller()
    ctl.observe(_crafted_pre_acts()[:60])
    ctl.observe(_crafted_pre_acts()[60:])  # statistics accumulate across batches
    assert ctl.n_samples.item() == 100
    assert ctl.frequency.tolist() == pytest.approx([0.5, 0.0, 0.05, 0.01, 0.03, 0.0])
    assert ctl.peak.tolist() == pytest.approx([2.0, 0.0, 0.4, 0.8, 1.5, 0.0])

    bias = torch.tensor([-0.2, -0.3, -0.1, -0.05, -0.995, -0.004])
    ctl.update(bias)
    rbar_group0 = (2.0 + 0.4) / 2  # mean of the POSITIVE peaks of group 0
    rbar_group1 = (0.8 + 1.5) / 2
    expected = [
        -0.2 - 0.01 * 2.0,                   # over-active: b - gamma_minus * r_m
        -0.3 + 0.01 * rbar_group0,           # dead: b + gamma_plus * rbar_k
        -0.1,                                # in between: unchanged
        -0.05,                               # exactly at target is not over target
        -1.0,                                # -0.995 - 0.015 clamped at -1
        min(-0.004 + 0.01 * rbar_group1, 0.0),  # raised and clamped at 0
    ]
    assert bias.tolist() == pytest.approx(expected, abs=1e-6)
    # statistics reset after every update
    assert ctl.n_samples.item() == 0 and ctl.fire_count.sum().item() == 0 and ctl.peak.sum().item() == 0


def test_dead_group_with_no_positive_peak_does_not_move():
    ctl = _controller()
    ctl.observe(torch.full((10, 6), -1.0))
    bias = torch.full((6,), -0.5)
    ctl.update(bias)
    assert bias.tolist() == [-0.5] * 6  # rbar = 0 when no neuron of the group has a positive peak


def test_gamma_values_are_used():
    ctl = _controller(gamma_minus=0.1, gamma_plus=0.2)
    ctl.observe(_crafted_pre_acts())
    bias = torch.full((6,), -0.5)
    ctl.update(bias)
    assert bias[0].item() == pytest.approx(-0.5 - 0.1 * 2.0)
    assert bias[1].item() == pytest.approx(-0.5 + 0.2 * 1.2)


def test_statistics_reduce_like_one_big_batch():
    """Two ranks' statistics, all-reduced (sum, sum, max), equal one process seeing all data."""
    y = _crafted_pre_acts()
    rank0, rank1, single = _controller(), _controller(), _controller()
    rank0.observe(y[::2])
    rank1.observe(y[1::2])
    single.observe(y)
    peers = {id(t): u for t, u in zip(rank0.buffers(), rank1.buffers())}

    def fake_all_reduce(tensor, op):
        other = peers[id(tensor)]
        tensor.copy_(tensor + other if op == "sum" else torch.maximum(tensor, other))

    rank0.reduce_statistics(fake_all_reduce)
    assert torch.equal(rank0.fire_count, single.fire_count)
    assert torch.equal(rank0.peak, single.peak)
    assert rank0.n_samples.item() == single.n_samples.item()


def test_rule_on_one_batch_equals_observe_then_update():
    """T = 1 applies the rule to the batch's statistics directly (no buffers); same result."""
    y = _crafted_pre_acts()
    start = torch.tensor([-0.2, -0.3, -0.1, -0.05, -0.995, -0.004])
    via_buffers, direct = start.clone(), start.clone()
    ctl = _controller()
    ctl.observe(y)
    stats_buffers = ctl.update(via_buffers)
    fresh = _controller()
    stats_direct = fresh.apply_rule(direct, (y > 0).float().sum(0), y.amax(0), y.shape[0])
    assert torch.equal(via_buffers, direct)
    assert fresh.n_samples.item() == 0 and not fresh.fire_count.any()  # buffers untouched
    assert {k: v.item() for k, v in stats_buffers.items()} == {k: v.item() for k, v in stats_direct.items()}
    assert fresh.apply_rule(start.clone(), (y > 0).float().sum(0), y.amax(0), 100, with_stats=False) == {}


def test_dead_threshold_must_sit_below_the_lowest_target():
    with pytest.raises(ValueError, match="dead_eps"):
        GroupBiasAdaptation(6, n_groups=2, highest_target=0.1, lowest_target=1e-3, dead_eps=1e-2)
