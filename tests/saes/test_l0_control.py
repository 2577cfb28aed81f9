"""A requested L0 (``target_l0``): the target scale's controller, the third branch of the rule, and a
GBA SAE that ends at the L0 it was asked for."""

import math
import warnings

import pytest
import torch

from gba_lens.saes import l0_control as C
from gba_lens.saes.bias_adaptation import GroupBiasAdaptation, group_index, group_targets
from gba_lens.saes.firing_worth import FiringWorth
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.l0_control import L0Control


def _geometric(d_sae=40, n_groups=4):
    return group_targets(n_groups, 0.1, 1e-3).float()[group_index(d_sae, n_groups)]


def test_the_targets_start_at_the_request_with_the_geometric_shape():
    base = _geometric()
    control = L0Control(3.0, base)
    scaled = control.scaled_targets()
    assert scaled.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert torch.allclose(scaled / base, torch.full_like(base, scaled[0].item() / base[0].item()))
    # a request above what the cap allows saturates at P_MAX instead of exceeding it
    assert L0Control(40.0, base).scaled_targets().max().item() == pytest.approx(C.P_MAX)


def test_near_the_request_the_scale_integrates_the_l0_error():
    base = _geometric()
    for measured, direction in ((2.0, 1), (4.5, -1)):  # within CAPTURE = 2x of the request 3
        control = L0Control(3.0, base)
        target = control.scaled_targets()
        start = target.clone()
        frequency = start * measured / start.sum()  # every neuron 1.5x over its target at most
        for _ in range(20):
            control.step(target, frequency)
        assert control.l0_average.item() == pytest.approx(measured, rel=1e-5)
        assert direction * (target.sum() - start.sum()).item() > 0
        assert control.log_scale.item() == pytest.approx(
            math.log(3.0 / base.sum().item()) + 20 * C.ETA * math.log(3.0 / measured), rel=1e-4)


def test_over_the_request_the_scale_leaves_the_l0_that_neurons_far_over_their_targets_hold_to_the_rule(monkeypatch):
    base = _geometric()
    lowest = base.argmin().item()

    def run(over, steps):
        control = L0Control(3.0, base)
        target = control.scaled_targets()
        frequency = target * over  # every neuron `over` times its target ...
        frequency[lowest] = 0.6    # ... but one, over FAR_OVER times it, which the rule lowers whatever its target
        for _ in range(steps):
            control.step(target, frequency)
        return control, frequency

    control, frequency = run(1.0, 50)  # the L0 is 3.6, all of its excess held by that neuron: the scale holds
    assert frequency.sum().item() == pytest.approx(3.6, rel=0.01) and control.l0_average.item() > 3.3
    assert control.log_scale.item() == pytest.approx(control.start, abs=1e-6)
    control, frequency = run(1.1, 1)   # 1.1x over elsewhere: only that excess is integrated
    held = 0.6 - control.base_target[lowest].item() * math.exp(control.start)
    assert control.log_scale.item() == pytest.approx(
        control.start + C.ETA * math.log(3.0 / (frequency.sum().item() - held)), rel=1e-5)
    monkeypatch.setattr(C, "FAR_OVER", 0.0)  # without the anti-windup the held L0 winds the scale down
    control, _ = run(1.0, 50)
    assert control.log_scale.item() < control.start - 0.1


def test_far_from_the_request_the_scale_holds_and_it_never_leaves_its_bound():
    base = _geometric()
    control = L0Control(3.0, base)
    start = control.log_scale.item()
    target = control.scaled_targets()
    for _ in range(100):  # a new SAE firing on almost everything: the rule, not the scale, brings it down
        control.step(target, torch.full_like(base, 0.9))
    assert control.log_scale.item() == start
    for _ in range(5000):  # a stuck L0 just under the request: the scale stops at BOUND
        control.step(target, torch.full_like(base, 2.0 / base.shape[0]))
    assert control.log_scale.item() == pytest.approx(start + math.log(C.BOUND), rel=1e-5)


def test_an_l0_average_off_the_request_by_more_than_the_tolerance_is_reported():
    control = L0Control(3.0, _geometric())
    assert control.unmet_request() is None  # no window yet
    for average, reported in ((3.0, False), (3.0 * (1 + 0.9 * C.TOLERANCE), False),
                              (3.0 * (1 - 0.9 * C.TOLERANCE), False), (3.6, True), (2.4, True)):
        control.l0_average.fill_(average)
        message = control.unmet_request()
        assert (message is not None) is reported, average
        if reported:
            assert message.startswith("target_l0=3 not reached") and f"{average:.3g}" in message


def test_the_request_is_judged_on_the_last_window_not_on_the_lagging_average():
    base = _geometric()
    control = L0Control(3.0, base)
    target = control.scaled_targets()
    for _ in range(3):  # the L0 falling through the request: the average is within, the last window 20% under
        control.step(target, torch.full_like(base, 3.2 / base.shape[0]))
    control.step(target, torch.full_like(base, 2.4 / base.shape[0]))
    assert abs(control.l0_average.item() / 3.0 - 1) <= C.TOLERANCE
    message = control.unmet_request()
    assert message is not None and "fired 2.4 latents per input" in message and "(-20%)" in message
    control.step(target, torch.full_like(base, 3.1 / base.shape[0]))  # a last window within: nothing to report
    assert control.unmet_request() is None


def test_training_too_short_for_the_request_warns_and_one_that_reaches_it_does_not():
    from gba_lens.data import TensorBatches
    from gba_lens.training.train import TrainConfig, train_sae

    torch.manual_seed(0)
    data = torch.relu(torch.randn(4096, 16))
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=16, d_sae=64, target_l0=2.0))
    with pytest.warns(UserWarning, match=r"target_l0=2 not reached: the SAE fired"):
        train_sae(sae, TensorBatches(data, 256, seed=0), TrainConfig(total_samples=2048, batch_size=256, device="cpu"))
    assert sae.bias_adaptation.l0_control.l0_average.item() > 2.2  # a new SAE fires on most inputs


def test_a_requested_l0_raises_live_neurons_under_target_that_the_paper_rule_leaves():
    d_sae = 8
    for requested, expect_raised in ((None, False), (0.4, True)):
        rule = GroupBiasAdaptation(d_sae, n_groups=2, target_l0=requested)
        bias = torch.full((d_sae,), -0.5)
        target = rule.target.clone()
        fire_count = (0.5 * target * 100_000).round()  # every neuron alive, at half its target
        rule.apply_rule(bias, fire_count, torch.ones(d_sae), 100_000)
        assert bool((bias > -0.5).all()) is expect_raised
        assert bool((bias == -0.5).all()) is not expect_raised


def test_with_a_request_a_neuron_far_over_its_target_lowers_by_its_over_ratio_in_full_steps(monkeypatch):
    frequency = torch.tensor([0.02, 0.1, 0.5, 0.0])  # 2, 10 and 50 times over their targets (each 0.01)
    peak = torch.tensor([1.0, 1.0, 1.0, 0.0])

    def lowering(share, anneal=True, l0_average=0.04, worth=None, **level):
        rule = GroupBiasAdaptation(4, n_groups=1, highest_target=0.01, lowest_target=0.01, anneal_with_lr=anneal,
                                   firing_worth=worth, **level)
        rule.lr_share = share
        rule.l0_control.l0_average.fill_(l0_average)  # this window (L0 0.62) moves it to 0.069 from 0.04
        bias = torch.full((4,), -0.5)
        rule.apply_rule(bias, frequency * 1000, peak, 1000)
        return (-0.5 - bias[:3]).tolist()

    told = {"target_l0": 0.04}  # the targets sum to it: each 0.01
    # the full step is gamma_minus * peak = 0.01; over FAR_OVER (4) times its target a neuron takes ratio / 4 of them
    assert lowering(0.25, **told) == pytest.approx([0.25 * 0.01, 0.01 * 10 / 4, 0.01 * 50 / 4], rel=1e-4)
    assert lowering(1.0, **told) == pytest.approx([0.01, 0.01 * 10 / 4, 0.01 * 50 / 4], rel=1e-4)
    assert lowering(None, anneal=False, **told) == pytest.approx([0.01, 0.01 * 10 / 4, 0.01 * 50 / 4], rel=1e-4)
    # how far over reads the target before firing_worth's multiplier: the second neuron, 100 times over the target
    # its firings' worth leaves it, is 10 times over its group's
    worth = FiringWorth(4, 0.5)
    worth.multiplier[1] = 0.1
    assert lowering(0.25, worth=worth, **told) == pytest.approx([0.25 * 0.01, 0.01 * 10 / 4, 0.01 * 50 / 4], rel=1e-4)
    # find_l0 (no request: its valleys hold neurons at their features' frequencies, far over their targets)
    # keeps one step for every neuron
    assert lowering(0.25, find_l0=True) == pytest.approx([0.25 * 0.01] * 3)
    monkeypatch.setattr(C, "FAR_OVER", 0.0)
    assert lowering(0.25, **told) == pytest.approx([0.25 * 0.01] * 3)


def test_a_far_over_neurons_step_grows_once_the_l0_has_come_down_and_while_it_is_over_the_request():
    """64 neurons with targets 0.001 (the request 0.064); the first fires 50 times over its target. Its step is one
    full step (the others' annealed to a quarter) while the L0 average has not yet come within DESCENT times the
    request; once it has, the step grows in a window over the request, whatever the average does afterwards, and
    in a window under the request it is annealed like the others'."""
    rule = GroupBiasAdaptation(64, n_groups=1, highest_target=1e-3, lowest_target=1e-3, target_l0=0.064,
                               anneal_with_lr=True)
    rule.lr_share = 0.25
    peak = torch.ones(64)

    def lowering(others):  # the first neuron's lowering step, the others firing at ``others`` each
        frequency = torch.full((64,), others)
        frequency[0] = 0.05
        bias = torch.full((64,), -0.5)
        rule.apply_rule(bias, frequency * 100_000, peak, 100_000)
        return -0.5 - float(bias[0])

    grown = 0.01 * 50 / C.FAR_OVER
    assert lowering(0.5) == pytest.approx(0.01)  # a dense start: the L0 (31.5) far over the request
    assert not rule.l0_control.reached
    rule.l0_control.l0_average.fill_(0.2)  # this window takes it to 0.193: three times the request, within DESCENT
    assert lowering(0.0002) == pytest.approx(0.25 * 0.01)  # the L0 (0.063) under the request: annealed like the others
    assert rule.l0_control.reached
    assert lowering(0.0011) == pytest.approx(grown, rel=1e-4)  # over it (0.119)
    assert lowering(0.5) == pytest.approx(grown, rel=1e-4)  # the average back over 2x the request: still grows


def test_with_a_request_a_neuron_the_encoder_keeps_far_over_its_target_is_brought_down(monkeypatch):
    """One neuron of 64, its pre-activations |N(0, 0.1^2)| on 4,096 samples a window plus 0.0015 more each window (the
    encoder keeping it firing: about the paper's step at its peak), its bias starting where it fires 50 times over
    its target (0.001); the other 63 fire at their targets, so that the L0 is within twice the request. Over the last
    50 of 100 windows the grown steps hold it at 5 times its target on average; the paper's step leaves it at 33."""
    gen = torch.Generator().manual_seed(0)
    windows = [(torch.randn(4096, generator=gen) * 0.1).abs() + 0.0015 * w for w in range(100)]

    def over_ratios(far_over):
        monkeypatch.setattr(C, "FAR_OVER", far_over)
        rule = GroupBiasAdaptation(64, n_groups=1, highest_target=1e-3, lowest_target=1e-3, target_l0=0.064)
        bias = torch.zeros(64)
        bias[0] = -float(torch.quantile(windows[0], 0.95))
        ratios = []
        for u in windows:
            y = u + bias[0]
            count, peak = torch.full((64,), 4.0), torch.full((64,), 0.1)  # 4 / 4,096: about the target
            count[0], peak[0] = (y > 0).sum(), y.max().clamp(min=0)
            ratios.append(float(count[0]) / u.shape[0] / 1e-3)
            rule.apply_rule(bias, count, peak, u.shape[0])
            bias[1:] = 0.0  # the others stay put
        assert rule.l0_control.reached
        return torch.tensor(ratios[-50:])

    assert over_ratios(C.FAR_OVER).mean() < 10
    assert over_ratios(0.0).mean() > 25


def test_invalid_requests_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="target_l0"):
        GBATrainingSAEConfig(d_in=8, d_sae=32, target_l0=0.0)
    with pytest.raises(ValueError, match="target_l0"):
        GBATrainingSAEConfig(d_in=8, d_sae=32, target_l0=33.0)
    with pytest.raises(ValueError, match="target_l0"):
        GBATrainingSAEConfig(d_in=8, d_sae=32, target_l0=float("nan"))
    with pytest.raises(ValueError, match="target_l0.*adaptive"):
        GBATrainingSAEConfig(d_in=8, d_sae=32, target_l0=4.0, targets="adaptive")


def test_the_controller_is_checkpointed_and_an_exported_sae_does_not_carry_it(step_input, resumed_state):
    gen = torch.Generator().manual_seed(1)
    batches = [torch.relu(torch.randn(64, 8, generator=gen)) * 2 for _ in range(8)]

    def sae():
        torch.manual_seed(0)
        return GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, target_l0=3.0))

    straight = sae()
    for step, x in enumerate(batches):
        out = straight.training_forward_pass(step_input(x, step))
    assert out.metrics["gba/l0_average"] == straight.bias_adaptation.l0_control.l0_average > 0  # logged
    assert "gba/target_scale" in out.metrics
    state = straight.state_dict()
    assert {"bias_adaptation.l0_control.log_scale", "bias_adaptation.l0_control.l0_average",
            "bias_adaptation.l0_control.base_target", "bias_adaptation.l0_control.reached"} <= state.keys()
    resumed = resumed_state(sae, batches, 4)
    for key, value in state.items():
        assert torch.equal(resumed[key], value), key
    assert not any("l0_control" in key or "bias_adaptation" in key for key in straight.to_inference_sae().state_dict())


def test_gba_ends_within_ten_percent_of_the_l0_it_was_asked_for():
    """A Zipfian model (128 features, 0.2 ... 0.002, true L0 ~3): asked for 3 and for 12 latents per
    input, the trained SAE fires that many on held-out samples within 10% (measured: 2.94 and 11.42 with the
    defaults' options, as ``target_l0`` trains since docs/experiments/prior_free.md's fifty-ninth step; 3.03 and
    11.34 with the paper's; with valley thresholds as well 1.72 and 8.09, which is why a told level leaves them
    off; a request of 2 ends at 2.17-2.21 in this short run, 490 steps)."""
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    from gba_lens.data import SeededBatches
    from gba_lens.training.train import TrainConfig, train_sae

    model = SyntheticModel(SyntheticModelConfig(
        num_features=128, hidden_dim=32,
        firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.2, min_prob=0.002), seed=0))
    held_out = model.sample(20_000)
    for requested in (3.0, 12.0):
        torch.manual_seed(0)
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=32, d_sae=128, target_l0=requested))
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="target_l0")  # reached: no warning
            train_sae(sae, SeededBatches(model.sample, 1024, seed=0),
                      TrainConfig(total_samples=500_000, batch_size=1024, lr=1e-2, device="cpu"))
        with torch.no_grad():
            l0 = (sae.to_inference_sae().encode(held_out) > 0).float().sum(-1).mean().item()
        assert l0 == pytest.approx(requested, rel=0.10)


def test_the_exported_sae_records_the_final_targets_that_the_dashboard_shows(step_input, tmp_path):
    from sae_lens import SAE

    from gba_lens.dashboard.data import gba_groups

    gen = torch.Generator().manual_seed(2)
    for i, options in enumerate(({"target_l0": 3.0}, {}, {"find_l0": False})):
        torch.manual_seed(0)
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, **options))
        for step in range(6):
            sae.training_forward_pass(step_input(torch.relu(torch.randn(64, 8, generator=gen)) * 2, step))
        final = sae.bias_adaptation.group_targets.tolist()
        sae.save_inference_model(tmp_path / str(i))
        for exported in (SAE.load_from_disk(tmp_path / str(i)), sae.to_inference_sae()):
            assert gba_groups(exported).targets == pytest.approx(final)
        geometric = group_targets(4, 0.1, 1e-3).tolist()
        # the requested L0, and by default the L0 found, scaled them; the paper's rule keeps them
        assert (final == pytest.approx(geometric)) is (options == {"find_l0": False})
