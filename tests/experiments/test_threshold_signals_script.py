"""scripts/threshold_signals.py: the measures it reports on each neuron, on inputs whose answer is
known (the runs themselves are the page's figures)."""

import math

import pytest
import torch


def test_the_f1_best_threshold_separates_a_feature_from_the_noise(script):
    best = script("threshold_signals").f1_best_threshold
    torch.manual_seed(0)
    present = torch.rand(20_000) < 0.1
    u = 0.2 * torch.randn(20_000) + 3.0 * present
    threshold, f1 = best(u, present)
    assert 0.6 < threshold < 2.4          # between the noise (sd 0.2) and the feature (3.0)
    assert f1 > 0.99


def test_elasticity_of_an_exponential_tail_is_the_threshold_over_its_scale(script):
    elasticity = script("threshold_signals").elasticity
    torch.manual_seed(0)
    u = torch.distributions.Exponential(torch.tensor(2.0)).sample((400_000,))   # P(u > t) = exp(-2 t)
    assert elasticity(u, 1.0) == pytest.approx(2.0, rel=0.05)
    assert elasticity(u, 0.5) == pytest.approx(1.0, rel=0.05)


def test_residual_anisotropy_is_one_when_isotropic_and_large_along_one_direction(script):
    anisotropy = script("threshold_signals").residual_anisotropy
    torch.manual_seed(0)
    d = 16
    isotropic = torch.randn(50_000, d)
    first, second = torch.eye(d)[0], torch.eye(d)[1]
    assert anisotropy(isotropic, first) == pytest.approx(1.0, abs=0.1)
    along_second = isotropic * 0.05 + torch.randn(50_000, 1) * second
    assert anisotropy(along_second, first) > 0.8 * (d - 1)
    # a residual along the neuron's own direction is projected out: nothing is left but the noise
    along_first = isotropic * 0.05 + torch.randn(50_000, 1) * first
    assert anisotropy(along_first, first) == pytest.approx(1.0, abs=0.15)


def test_the_null_rule_puts_the_threshold_above_what_the_null_explains(script):
    rule = script("threshold_signals").null_excess_thresholds
    torch.manual_seed(0)
    noise = torch.randn(20_000, 2).abs()
    feature = (torch.rand(20_000, 2) < 0.05) * torch.tensor([6.0, 0.0])
    thresholds = rule(noise + feature, noise)
    assert 2.0 < thresholds[0] < 6.0      # neuron 0: a feature at 6 over a half-normal null
    assert thresholds[1] < 0.5            # neuron 1: u is its null, no excess to keep


def test_the_largest_lead_is_where_the_data_gains_most_over_the_null(script):
    lead = script("threshold_signals").largest_lead
    assert lead([1, 2, 4, 8], [0.3, 0.6, 0.7, 0.8], [0.2, 0.3, 0.5, 0.75]) == 2
    assert math.isclose(lead([0.5, 1.0], [0.1, 0.2], [0.05, 0.0]), 1.0)


def test_an_unknown_model_is_refused_by_the_parser(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script("threshold_signals").main(["oracle", "--models", "D"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'D'" in capsys.readouterr().err


def test_the_universal_threshold_fires_a_feature_and_leaves_pure_noise_silent(script):
    universal = script("threshold_signals").universal_thresholds
    torch.manual_seed(0)
    n = 100_000
    present = torch.rand(n) < 0.05
    u = torch.stack([torch.randn(n) + 6.0 * present, torch.randn(n)], 1)
    thresholds = universal(u)
    # a feature at 6 sigma on 5% of the inputs: it pays from about sqrt(2 ln 20) = 2.45 sigma on
    assert 2.2 < thresholds[0] < 3.2
    assert ((u[:, 0] > thresholds[0]) == present).float().mean() > 0.99
    # for Gaussian noise sqrt(2 ln(1 / P(z' > z))) > z at every z: nothing pays before the sample
    # runs out, sqrt(2 ln n)
    assert thresholds[1] == pytest.approx(math.sqrt(2 * math.log(n)), abs=0.2)
    assert (universal(u, c=1.3)[0] > thresholds[0] + 0.5)


def test_the_mixture_threshold_separates_two_modes_and_gives_up_on_one(script):
    mixture = script("threshold_signals").mixture_thresholds
    torch.manual_seed(0)
    present = torch.rand(100_000) < 0.1
    two_modes = 0.3 * torch.randn(100_000) + 4.0 * present
    thresholds = mixture(torch.stack([two_modes, torch.randn(100_000)], 1))
    # equal variances: 0.9 N(t; 0, 0.3) = 0.1 N(t; 4, 0.3) at t = 2 + 0.3^2 ln(9) / 4 = 2.049
    # (the fitted parameters and the grid, 0.015 apart, move it by less than 0.05)
    assert thresholds[0] == pytest.approx(2 + 0.09 * math.log(9) / 4, abs=0.05)
    assert ((two_modes > thresholds[0]) == present).float().mean() > 0.999
    assert thresholds[1].isnan()                # one Gaussian: no component above the noise


def test_the_top_target_reaches_the_oracle_only_when_asked(script, monkeypatch, capsys):
    module = script("threshold_signals")
    calls = []
    monkeypatch.setattr(module, "setting", lambda name, cache: module.Setting(
        name, None, None, 8, 4, 1e-3, 0.0, 100, {}, 1.0, lambda sae: {}))
    monkeypatch.setattr(module, "oracle", lambda s, seed, n, **options: calls.append(options) or {"model": s.name})
    module.main(["oracle", "--models", "A", "--highest-target", "0.2"])
    module.main(["oracle", "--models", "A"])
    assert calls == [{"highest_target": 0.2}, {}]   # absent: GBA's own default, not a copy of it
    assert capsys.readouterr().out.count('"model": "A"') == 2


def test_seed_agreement_is_one_for_a_permuted_copy_and_low_for_unrelated_directions(script):
    seed_agreement = script("threshold_signals").seed_agreement
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 32)).Q[:16]            # 16 orthonormal rows in d = 32
    same = [basis, 2.0 * basis[torch.randperm(16)]]               # row order and norm do not matter
    assert seed_agreement(same) == pytest.approx((1.0, 1.0))
    half = torch.cat([basis[:8], torch.linalg.qr(torch.randn(32, 32)).Q[:8]])
    consistency, best = seed_agreement([basis, half])
    assert consistency == pytest.approx(0.5, abs=0.07)            # 8 of 16 rows shared each way
    assert 0.5 < best < 0.9


def test_agreement_needs_two_seeds(script, capsys):
    with pytest.raises(SystemExit):
        script("threshold_signals").main(["agreement", "--models", "A", "--seeds", "3", "3"])
    assert "at least two different --seeds" in capsys.readouterr().err


def test_the_coactivation_ratio_is_one_for_independent_units_above_for_mixtures_and_leaves_twins_out(script):
    ratio = script("threshold_signals").coactivation_ratio
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(32, 64, generator=gen)
    fire = (torch.rand(8000, 32, generator=gen) < 0.03).float()
    assert ratio(fire, directions) == pytest.approx(1.0, abs=0.03)
    # two mixtures of each direction with others (|cos| about 0.3) that fire together
    mixtures = torch.cat([directions + 1.5 * torch.randn(32, 64, generator=gen),
                          directions + 1.5 * torch.randn(32, 64, generator=gen)])
    assert ratio(torch.cat([fire, fire], dim=1), mixtures) > 1.4  # measured 1.60
    # near-copies (|cos| about 0.98) are left out of both means
    twins = torch.cat([directions, directions + 0.2 * torch.randn(32, 64, generator=gen)])
    others = (torch.rand(8000, 64, generator=gen) < 0.03).float()
    assert ratio(torch.cat([fire, fire], dim=1) + others, twins) == pytest.approx(1.0, abs=0.05)
