"""The streaming statistics equal a brute-force computation over all activations."""

import math

import pytest
import torch

from gba_lens.dashboard.collect import FeatureStats
from gba_lens.dashboard.stream import collect

HOOK = "blocks.0.hook_resid_post"


def brute_force(model, sae, tokens):
    _, cache = model.run_with_cache(tokens, names_filter=[HOOK])
    return sae.encode(cache[HOOK]).detach()  # [rows, pos, d_sae]


def test_collection_matches_brute_force(tiny_model, tiny_sae, tiny_tokens):
    k, bins, bands, s = 5, 16, 4, 2
    stats = collect(
        tiny_model, tiny_sae, HOOK, tiny_tokens, batch_size=3, exclude_tokens=(), progress=False,
        top_k=k, n_bins=bins, n_bands=bands, samples_per_band=s, context_left=3, context_right=2,
    )
    acts = brute_force(tiny_model, tiny_sae, tiny_tokens)
    flat = acts.reshape(-1, acts.shape[-1])
    n_pos = tiny_tokens.shape[1]
    assert stats.n_tokens == flat.shape[0]
    assert torch.equal(stats.fire_count, (flat > 0).sum(0))
    torch.testing.assert_close(stats.act_max, flat.max(0).values.clamp(min=0))
    torch.testing.assert_close(stats.act_sum.float(), flat.sum(0), rtol=1e-5, atol=1e-5)
    assert 0 < (stats.fire_count > 0).sum() < flat.shape[1] + 1
    for f in range(flat.shape[1]):
        col = flat[:, f]
        positive = col[col > 0]
        # top-k: same tokens (the activations are continuous, so there are no ties)
        n_top = min(k, len(positive))
        expect = set(col.topk(n_top).indices.tolist()) if n_top else set()
        got = stats.top_where[f][: n_top]
        assert {int(r) * n_pos + int(p) for r, p in got} == expect
        assert torch.isinf(stats.top_value[f][n_top:]).all()
        for (r, p), value, window, wacts in zip(got, stats.top_value[f], stats.top_tokens[f], stats.top_acts[f]):
            assert value == acts[r, p, f]
            assert window[3] == tiny_tokens[r, p]  # the firing token sits after context_left tokens
            assert math.isclose(float(wacts[3]), float(acts[r, p, f]), rel_tol=1e-3)
            if p >= 1:
                assert window[2] == tiny_tokens[r, p - 1]
            else:
                assert window[2] == -1
        if not len(positive):
            assert stats.hist[f].sum() == 0
            continue
        # histogram: exact counts on the final range
        rng = float(stats.range[f])
        assert rng / 2 < positive.max() <= rng
        expect_hist = torch.bincount((positive * (bins / rng)).long().clamp(max=bins - 1), minlength=bins)
        assert torch.equal(stats.hist[f], expect_hist)
        # band samples: min(s, band size) samples, each really in its band
        for b in range(bands):
            row = f * bands + b
            in_band = int(expect_hist[b * bins // bands : (b + 1) * bins // bands].sum())
            kept = torch.isfinite(stats.band_key[row])
            assert int(kept.sum()) == min(s, in_band)
            for (r, p), value in zip(stats.band_where[row][kept], stats.band_value[row][kept]):
                assert value == acts[r, p, f]
                assert b * rng / bands <= value <= (b + 1) * rng / bands


def test_state_size_independent_of_tokens(tiny_model, tiny_sae):
    small = torch.randint(0, 40, (4, 12))
    large = torch.randint(0, 40, (64, 12))
    a = collect(tiny_model, tiny_sae, HOOK, small, batch_size=4, progress=False)
    b = collect(tiny_model, tiny_sae, HOOK, large, batch_size=4, progress=False)
    assert b.n_tokens == 16 * a.n_tokens
    assert a.state_bytes() == b.state_bytes() == FeatureStats(24).state_bytes()


def test_masked_positions_are_not_counted(tiny_model, tiny_sae, tiny_tokens):
    skip = int(tiny_tokens[0, 0])
    stats = collect(tiny_model, tiny_sae, HOOK, tiny_tokens, exclude_tokens=[skip], batch_size=6, progress=False)
    keep = tiny_tokens != skip
    assert stats.n_tokens == int(keep.sum())
    acts = brute_force(tiny_model, tiny_sae, tiny_tokens) * keep[..., None]
    assert torch.equal(stats.fire_count, (acts > 0).flatten(0, 1).sum(0))
    kept = stats.top_where[stats.top_where[..., 0] >= 0]
    assert keep[kept[:, 0], kept[:, 1]].all()


@pytest.mark.parametrize("bad", [dict(n_bands=3), dict(n_bins=4, n_bands=8), dict(top_k=0)])
def test_bad_settings(bad):
    with pytest.raises(ValueError):
        FeatureStats(8, **bad)
