"""scripts/norm_structure.py: its two statistics on inputs whose answer is known (the runs
themselves are prior_free.md's forty-first step)."""

import pytest
import torch


def _sparse(n: int, d: int = 32, features: int = 32, seed: int = 0) -> torch.Tensor:
    """Sparse inputs: 1 to 4 features each, of magnitude 0.5 … 1.5, a feature's magnitude drawn on its own."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(features, d, generator=g), dim=-1)
    count = torch.randint(1, 5, (n, 1), generator=g)
    active = torch.rand(n, features, generator=g).argsort(1) < count
    return (active * (0.5 + torch.rand(n, features, generator=g))) @ dictionary


def test_a_scale_mixture_direction_says_nothing_of_the_norm(script):
    s = script("norm_structure")
    x = _sparse(4000)
    x = x / x.norm(dim=-1, keepdim=True)  # one norm for every direction, then a gain drawn apart
    scaled = x * (0.3 + 3.0 * torch.rand(4000, 1, generator=torch.Generator().manual_seed(1)))
    assert abs(s.norm_from_direction(scaled)) < 0.05
    assert abs(s.norm_and_nearest_cosine(scaled)) < 0.06


def test_independent_magnitudes_tie_the_norm_to_the_direction(script):
    s = script("norm_structure")
    x = _sparse(4000)
    assert s.norm_from_direction(x) > 0.3
    assert s.norm_and_nearest_cosine(x) < -0.3   # more features: a larger norm, no close neighbour


def test_a_norm_fixed_by_the_direction_is_predicted_exactly(script):
    s = script("norm_structure")
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(2000, 8, generator=g), dim=-1)
    x = u * torch.exp(u @ torch.tensor([1.0, -0.5, 0, 0, 0, 0, 0, 0.3]))[:, None]
    assert s.norm_from_direction(x) == pytest.approx(1.0, abs=1e-6)


def test_rank_correlation_reads_ranks_not_values(script):
    s = script("norm_structure")
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert s.rank_correlation(a, a.exp()) == pytest.approx(1.0)
    assert s.rank_correlation(a, -a ** 3) == pytest.approx(-1.0)


def test_tied_values_share_their_mean_rank_whatever_their_order(script):
    s = script("norm_structure")
    assert s.ranks(torch.tensor([3.0, 1.0, 1.0, 2.0, 1.0])).tolist() == [4.0, 1.0, 1.0, 3.0, 1.0]
    norm = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # ties broken by position would read 1 here; with mean ranks, (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    assert s.rank_correlation(norm, torch.tensor([1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.9486833, abs=1e-6)


def test_too_few_or_zero_inputs_are_refused_with_one_line(script):
    s = script("norm_structure")
    with pytest.raises(ValueError, match="cannot fit 8 directions"):
        s.norm_from_direction(torch.randn(10, 8))
    with pytest.raises(ValueError, match="every input is zero"):
        s.norm_and_nearest_cosine(torch.zeros(5, 3))


def test_the_nearest_cosine_leaves_out_the_row_itself_in_every_block(script, monkeypatch):
    s = script("norm_structure")
    monkeypatch.setattr(s, "ROWS_PER_BLOCK", 3)     # blocks that split the rows unevenly
    x = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [1.0, 1.0]])
    u = torch.nn.functional.normalize(x.double(), dim=-1)
    gram = u @ u.T
    gram.fill_diagonal_(-2.0)
    expected = s.rank_correlation(x.double().norm(dim=-1), gram.max(1).values)
    assert s.norm_and_nearest_cosine(x) == pytest.approx(expected)
