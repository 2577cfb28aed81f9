"""The firings reallocated between latents at one price (``decoder_refit``'s rounds, JumpReLU gate).

Each latent's rows are counted, with their summed worth, in the bins between its candidate cuts; at the
price that keeps the firings, a latent whose marginal firings are worth little gives them up and one
whose silent rows are worth more takes them; latents without a positive threshold keep theirs; on an
SAE the L0 stays and the refit with the rounds ends at a lower error than without; not under ReLU."""

from __future__ import annotations

import math

import pytest
import torch

from gba_lens.saes import decoder_refit
from gba_lens.saes import threshold_reallocation as T
from gba_lens.saes.decoder_refit import refit_decoder
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.threshold_reallocation import (BINS, RANGE, CutStatistics, candidate_entries,
                                                    reallocate_thresholds)


def _cut(j: int) -> float:
    """The ratio u / t of cut j."""
    return RANGE ** (2 * j / BINS - 1)


def test_rows_are_counted_with_their_worth_in_the_bin_between_their_two_cuts():
    """Ratios just inside a bin, on either side of the current threshold, above the highest cut and under
    the lowest (not candidates); a latent whose threshold is 0 counts nothing."""
    threshold = torch.tensor([0.2, 0.5, 0.0])
    ratios = [_cut(0) * 0.99, _cut(10) * 1.01, _cut(32) * 0.999, _cut(32) * 1.001, _cut(40) * 1.01, RANGE * 1.5]
    u = torch.tensor([[r * 0.2, r * 0.5, r] for r in ratios])
    worth = torch.arange(1.0, 1 + u.numel()).view(u.shape)
    stats = CutStatistics(3, "cpu")
    row, latent, ratio = candidate_entries(u, threshold)
    stats.add(latent, ratio, worth[row, latent])
    stats.add(latent, ratio, worth[row, latent])  # sums
    expected_bins = [None, 10, 31, 32, 40, BINS]  # None: under the lowest cut
    for latent in (0, 1):
        count = torch.zeros(BINS + 1, dtype=torch.float64)
        summed = torch.zeros(BINS + 1, dtype=torch.float64)
        for row, column in enumerate(expected_bins):
            if column is not None:
                count[column] += 2
                summed[column] += 2 * float(worth[row, latent])
        assert torch.equal(stats.count[latent], count)
        assert torch.allclose(stats.worth[latent], summed)
    assert stats.count[2].sum() == 0 and stats.worth[2].abs().sum() == 0


def test_at_the_price_that_keeps_the_firings_cheap_firings_go_to_where_silent_rows_are_worth_more(monkeypatch):
    """Latent 0 fires on 100 rows worth 0.01 each just over its threshold and 100 worth 1 further up;
    latent 1 fires on 100 rows worth 1 and would add 0.5 on each of 100 silent rows just under its
    threshold. Holding 300 firings, latent 0 gives up its cheap firings (half of them, which MIN_KEPT
    allows) and latent 1 takes the rows; where a round must keep three quarters, nothing moves."""
    threshold = torch.tensor([0.1, 0.1])
    stats = CutStatistics(2, "cpu")
    just_over, further, just_under = 1.1 * 0.1, 2.0 * 0.1, 0.9 * 0.1
    u = torch.tensor([[just_over, further]] * 100 + [[further, just_under]] * 100)
    worth = torch.tensor([[0.01, 1.0]] * 100 + [[1.0, 0.5]] * 100)
    row, latent, ratio = candidate_entries(u, threshold)
    stats.add(latent, ratio, worth[row, latent])
    assert stats.count[:, BINS // 2:].sum() == 300  # firing now (u > t)
    cut, price = stats.cuts()
    kept = stats.count.flip(1).cumsum(1).flip(1).gather(1, cut[:, None]).squeeze(1)
    assert kept.tolist() == [100, 200] and 0.01 - 1e-6 < price < 0.5  # the lowest price at 300 firings
    moved = stats.thresholds(threshold, cut)
    assert just_over <= moved[0] < further  # latent 0 now fires on its valuable rows only
    assert moved[1] < just_under  # latent 1 fires on the rows under its old threshold too
    monkeypatch.setattr(T, "MIN_KEPT", 0.75)
    cut, _ = stats.cuts()
    assert cut.tolist() == [BINS // 2, BINS // 2]


def _sae(gating: str = "jumprelu") -> tuple[GBATrainingSAE, torch.Tensor]:
    """A GBA SAE whose thresholds let some latents fire on a quarter of rows and others rarely."""
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=16, d_sae=64, n_groups=2, gating=gating))
    directions = torch.randn(96, 16)
    x = torch.relu(torch.randn(6000, 96) - 1.2) @ directions
    sae.initialize_from_batch(x)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.6, -0.1)
    return sae, x


def _l0(sae: GBATrainingSAE, x: torch.Tensor) -> float:
    sae.eval()
    with torch.no_grad():
        _, hidden_pre = sae.encode_with_hidden_pre(x)
    sae.train()
    return float((hidden_pre > 0).float().sum(1).mean())


def test_on_an_sae_the_l0_stays_thresholds_move_both_ways_and_the_refit_ends_lower(monkeypatch):
    sae, x = _sae()
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 0)
    refit_decoder(sae, x)
    bias, l0 = sae.b_enc.detach().clone(), _l0(sae, x)
    found = reallocate_thresholds(sae, x, batch_size=1000)  # several chunks
    assert _l0(sae, x) == pytest.approx(l0, rel=0.01)
    change = sae.b_enc.detach() - bias
    assert (change > 1e-6).sum() >= 5 and (change < -1e-6).sum() >= 5 and found["moved"] > 0.2
    assert math.isfinite(found["price"])
    ratio = (-sae.b_enc.detach()) / (-bias)
    assert ((ratio >= 1 / RANGE - 1e-6) & (ratio <= RANGE + 1e-6)).all()  # within one round's reach

    without, _ = _sae()
    rounds, _ = _sae()
    plain = refit_decoder(without, x)
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 2)
    result = refit_decoder(rounds, x)
    assert result["error_after"] < plain["error_after"] - 1e-3
    assert _l0(rounds, x) == pytest.approx(_l0(without, x), rel=0.02)


def test_latents_without_a_positive_threshold_or_out_of_reach_keep_their_bias_and_relu_is_not_reallocated():
    sae, x = _sae()
    with torch.no_grad():
        sae.b_enc[0] = 0.0  # fires wherever u > 0: no threshold to scale
        sae.b_enc[1] = -50.0  # outside the rule's range, never fires
    reallocate_thresholds(sae, x)
    assert sae.b_enc[0] == 0.0 and sae.b_enc[1] == -50.0
    relu, x = _sae("relu")
    bias = relu.b_enc.detach().clone()
    refit_decoder(relu, x)
    assert torch.equal(relu.b_enc, bias)


def test_ranks_holding_the_same_rows_choose_the_one_process_cuts():
    """The sums all-reduced over two ranks (here: doubled) give the same price per firing and cuts."""
    sae, x = _sae()
    twice, _ = _sae()
    twice.reduce_window_statistics = lambda statistics: statistics.reduce_statistics(lambda t, op: t.mul_(2))
    one = reallocate_thresholds(sae, x)
    two = reallocate_thresholds(twice, x)
    assert torch.equal(sae.b_enc, twice.b_enc)
    assert two["price"] == pytest.approx(one["price"], rel=1e-6)
    assert T.BINS == BINS  # the module's constants, read at the call
