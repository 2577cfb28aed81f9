"""scripts/lm_error_cost.py: the noise it adds has the asked total squared error, spread as named
(the runs themselves are prior_free.md's forty-first step)."""

import pytest
import torch


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 50, 16, generator=g) * torch.exp(torch.randn(4, 50, 1, generator=g))   # norms over e^±2


@pytest.mark.parametrize("spread", ["even", "relative"])
def test_the_noise_has_the_total_squared_error_asked(script, spread):
    noise = script("lm_error_cost").noise
    e = noise(_inputs(), 7.5, spread, torch.Generator().manual_seed(1))
    assert e.shape == (4, 50, 16)
    assert float(e.pow(2).sum()) == pytest.approx(7.5, rel=1e-5)


def test_even_gives_every_row_one_norm_and_relative_a_share_of_its_own(script):
    noise = script("lm_error_cost").noise
    x = _inputs()
    even = noise(x, 3.0, "even", torch.Generator().manual_seed(1)).norm(dim=-1)
    relative = noise(x, 3.0, "relative", torch.Generator().manual_seed(1)).norm(dim=-1) / x.norm(dim=-1)
    assert torch.allclose(even, even.flatten()[0].expand_as(even), rtol=1e-5)
    assert torch.allclose(relative, relative.flatten()[0].expand_as(relative), rtol=1e-5)
    assert not torch.allclose(even / x.norm(dim=-1), (even / x.norm(dim=-1)).flatten()[0].expand_as(even), rtol=0.1)


def test_an_unknown_spread_is_refused_with_one_line(script):
    with pytest.raises(ValueError, match="spread must be one of"):
        script("lm_error_cost").noise(_inputs(), 1.0, "uniform", torch.Generator())
