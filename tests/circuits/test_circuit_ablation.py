"""Circuit utilities: feature ablation (zero / mean / resample), single and swept."""

from __future__ import annotations

import pytest
import torch

from gba_lens import attach
from gba_lens.circuits import (
    ablate_features,
    ablation_hooks,
    ablation_sweep,
)

from circuit_builders import BATCH, HOOK_Z, RESID, SEQ


def test_ablating_nothing_leaves_logits_unchanged(tiny):
    model, saes, clean, _, metric, ref = tiny
    with attach(model, saes, error_term=True) as att, torch.no_grad():
        attached = model(clean)
        torch.testing.assert_close(attached, ref, atol=1e-5, rtol=0)
        nowhere = torch.zeros(BATCH, SEQ, dtype=torch.bool)
        for mode in ("zero", "mean", "resample"):
            hooks = ablation_hooks(att, {RESID: [0, 1, 2], HOOK_Z: [3]}, mode, positions=nowhere, tokens=clean)
            assert torch.equal(model.run_with_hooks(clean, fwd_hooks=hooks), attached)
            r = ablate_features(att, clean, {RESID: [0, 1, 2]}, metric, mode=mode, positions=nowhere)
            assert r.delta == 0.0
        # a feature that never fires: zero ablation is exactly a no-op
        acts = model.run_with_cache(clean, names_filter=att.feature_hook_name(RESID))[1][att.feature_hook_name(RESID)]
        dead = torch.nonzero(acts.amax((0, 1)) == 0).flatten()
        if len(dead):
            assert ablate_features(att, clean, {RESID: dead.tolist()}, metric).delta == 0.0


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
@pytest.mark.parametrize("hook", [RESID, HOOK_Z])
def test_ablation_removes_only_the_features_contribution(tiny, mode, hook):
    """Ablating feature f = adding (value - a_f) * W_dec[f] to the clean activation (error kept)."""
    model, saes, clean, _, metric, _ = tiny
    feats = [5, 9]
    with attach(model, saes, error_term=True) as att:
        name = att.feature_hook_name(hook)
        with torch.no_grad():
            acts = model.run_with_cache(clean, names_filter=name)[1][name]
        if mode == "zero":
            value = torch.zeros_like(acts)
        elif mode == "mean":
            value = acts.mean((0, 1)).expand_as(acts)
        else:
            from gba_lens.circuits.ablation import ablation_sources

            value = ablation_sources(att, [hook], "resample", clean, seed=3)[hook].expand_as(acts)
        positions = [2, -1]
        mask = torch.zeros(BATCH, SEQ, 1)
        mask[:, [2, SEQ - 1]] = 1
        delta_acts = (value - acts)[..., feats] * mask  # [B, P, K]
        delta = delta_acts @ saes[hook].W_dec[feats].detach()  # [B, P, d_in]
        result = ablate_features(att, clean, {hook: feats}, metric, mode=mode, positions=positions, seed=3)

    def add(act, hook):  # noqa: ARG001
        return act + delta.reshape(act.shape)

    with torch.no_grad():
        expected = float(metric(model.run_with_hooks(clean, fwd_hooks=[(hook, add)])))
        clean_metric = float(metric(model(clean)))
    assert result.metric_clean == pytest.approx(clean_metric, abs=1e-5)
    assert result.metric_ablated == pytest.approx(expected, abs=1e-4)
    assert abs(result.delta) > 1e-4  # the ablation did something


def test_ablation_sweep_matches_single_ablations(tiny):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        for mode in ("zero", "mean"):
            df = ablation_sweep(att, clean, metric, mode=mode, batch_size=7, progress=False)
            df1 = ablation_sweep(att, clean, metric, mode=mode, batch_size=1, progress=False)
            assert len(df) > 10
            merged = df.merge(df1, on=["hook", "feature"])
            torch.testing.assert_close(torch.tensor(merged["delta_x"].to_numpy()), torch.tensor(merged["delta_y"].to_numpy()),
                                       atol=1e-5, rtol=0)
            assert df["delta"].abs().is_monotonic_decreasing
            for row in df.head(3).itertuples():
                single = ablate_features(att, clean, {row.hook: [row.feature]}, metric, mode=mode)
                assert single.delta == pytest.approx(row.delta, abs=1e-5)
        everything = ablation_sweep(att, clean, metric, "all", progress=False)
        assert len(everything) == 128
        skipped = everything[~everything["computed"]]
        assert (skipped["delta"] == 0).all() and (skipped["frac_active"] == 0).all()
        assert df.attrs["n_forward"] < len(df)  # batched


def test_ablation_without_error_term_warns(tiny):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, {RESID: saes[RESID]}, error_term=False) as att:
        with pytest.warns(UserWarning, match="error_term=True"):
            ablate_features(att, clean, [0], metric)
