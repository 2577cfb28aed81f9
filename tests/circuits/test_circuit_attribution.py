"""Circuit utilities: attribution (AtP / IG), exact patching and verification, on a tiny model
and on a TransformerBridge."""

from __future__ import annotations

import pytest
import torch

from gba_lens import attach
from gba_lens.circuits import (
    Steer,
    ablate_features,
    attribute,
    exact_patching,
    logit_diff_metric,
    run_with_steering,
    verify_attribution,
)

from circuit_builders import BATCH, D_MODEL, D_VOCAB, HOOK_Z, RESID, SEQ, random_sae


def test_ig_completeness(tiny):
    model, saes, clean, corrupt, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        ig = attribute(att, clean, corrupt, metric, method="ig", ig_steps=32, progress=False)
    # blocks.1.hook_resid_pre is a complete cut: patching all its nodes = the corrupted run
    assert ig.patched_metric[RESID] == pytest.approx(ig.metric_corrupted, abs=1e-4)
    target = ig.metric_corrupted - ig.metric_clean
    assert abs(target) > 0.05
    assert abs(ig.total(RESID) - target) <= 0.02 * abs(target)
    # hook_z is not a cut: completeness holds against patching every node at that hook
    assert ig.completeness_error(HOOK_Z) <= 0.02
    # without the error nodes, the feature scores alone do not add up
    assert abs(ig.total(RESID, include_error=False) - target) > 0.05 * abs(target)


def test_atp_correlates_with_exact_patching(tiny):
    model, saes, clean, corrupt, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        res = attribute(att, clean, corrupt, metric, progress=False)
        assert res.n_forward == 2 and res.n_backward == 1
        check = verify_attribution(att, clean, corrupt, res, metric, k=40, progress=False)
        features_only = verify_attribution(att, clean, corrupt, res, metric, k=30, include_error=False,
                                           per_position=False, progress=False)
    print(f"\nAtP vs exact patching (tiny model): Spearman {check.attrs['spearman']:.3f} over the top 40 nodes, "
          f"{features_only.attrs['spearman']:.3f} over the top 30 features (all positions)")
    assert check.attrs["spearman"] > 0.8
    assert features_only.attrs["spearman"] > 0.8
    assert check.attrs["sign_agreement"] >= 0.9
    # an AtP score is the first-order estimate of exact patching: close for the biggest nodes
    top = check.iloc[0]
    assert top["estimate"] == pytest.approx(top["exact"], rel=0.5)


def test_attribution_matches_bruteforce_gradient(tiny):
    """AtP score = (a_corrupt - a_clean) * dm/da, checked against a finite difference."""
    model, saes, clean, corrupt, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        res = attribute(att, clean, corrupt, metric, progress=False)
        row = res.table(k=1, include_error=False).iloc[0]
        name = att.feature_hook_name(row.hook)
        with torch.no_grad():
            a_clean = model.run_with_cache(clean, names_filter=name)[1][name][:, row.position, row.feature]
            a_corr = model.run_with_cache(corrupt, names_filter=name)[1][name][:, row.position, row.feature]
        eps = 1e-3

        def nudge(acts, hook):  # noqa: ARG001
            acts = acts.clone()
            acts[:, row.position, row.feature] += eps * (a_corr - a_clean)
            return acts

        with torch.no_grad():
            m0 = float(metric(model(clean)))
            m1 = float(metric(model.run_with_hooks(clean, fwd_hooks=[(name, nudge)])))
    assert (m1 - m0) / eps == pytest.approx(row.score, rel=2e-2, abs=1e-4)


def test_attribution_table_heatmap_and_errors(tiny):
    model, saes, clean, corrupt, metric, _ = tiny
    labels = [f"t{i}" for i in range(SEQ)]
    res = attribute(model, clean, corrupt, answer_tokens=torch.tensor([[1, 2]] * BATCH), saes=saes,
                    position_labels=labels, progress=False)
    with torch.no_grad():
        assert res.metric_clean == pytest.approx(float(metric(model(clean))), abs=1e-5)
    table = res.table()
    assert list(table.columns) == ["hook", "node", "feature", "position", "score", "token"]
    assert set(table["hook"]) == {RESID, HOOK_Z} and set(table["node"]) == {"feature", "error"}
    assert table["score"].abs().is_monotonic_decreasing
    assert (table.loc[table["node"] == "error", "feature"] == -1).all()
    # positions before the corruption cannot matter
    assert (table["position"] >= 3).all()
    neg = res.top(5, by="neg")
    assert len(neg) == 5 and neg["score"].is_monotonic_increasing
    assert res.total() == pytest.approx(table["score"].sum(), rel=1e-4)
    per_feature = res.table(per_position=False, include_error=False)
    assert (per_feature["position"] == -1).all()
    assert len(res.nodes(3)) == 3
    fig = res.heatmap(RESID, k=5)
    assert fig.axes and len(fig.axes[0].get_yticklabels()) == 6  # 5 features + error
    ex = exact_patching(model, clean, corrupt, [(RESID, None, None), (HOOK_Z, None, None)], metric, saes=saes,
                        progress=False)
    # patching the whole error at a complete cut is not the whole effect; just check it runs and is finite
    assert ex["exact"].notna().all() and list(ex["node"]) == ["error", "error"]

    with attach(model, saes, error_term=True) as att:
        with pytest.raises(ValueError, match="same shape"):
            attribute(att, clean, corrupt[:, :-1], metric)
        with pytest.raises(KeyError, match="Close matches"):
            attribute(att, clean, corrupt, metric, hooks=["blocks.1.hook_resid_prex"])
        with pytest.raises(ValueError, match="out of range"):
            ablate_features(att, clean, {RESID: [64]}, metric)
        with pytest.raises(ValueError, match="positions"):
            ablate_features(att, clean, {RESID: [1]}, metric, positions=torch.tensor([1, 2]))
        with pytest.raises(ValueError, match="answer_tokens"):
            attribute(att, clean, corrupt)
        with pytest.raises(ValueError, match="non-finite"):
            ablate_features(att, clean, {RESID: [1]}, lambda logits: logits.sum() * float("nan"))
        with pytest.raises(ValueError, match="not both"):
            attribute(att, clean, corrupt, metric, saes=saes)
    with attach(model, {RESID: saes[RESID]}, error_term=False) as att:
        with pytest.raises(ValueError, match="error_term=True"):
            attribute(att, clean, corrupt, metric)
        assert attribute(att, clean, corrupt, metric, include_error=False, progress=False).error_scores == {}
    with pytest.raises(TypeError, match="without SAEs"):
        attribute(model, clean, corrupt, metric)


def test_works_on_transformer_bridge():
    """Same utilities on a TransformerBridge (legacy and canonical hook names both accepted)."""
    from transformer_lens import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_native(TransformerBridgeConfig(
        d_model=D_MODEL, d_head=8, n_layers=2, n_ctx=16, n_heads=4, d_vocab=D_VOCAB, act_fn="gelu", seed=0)).eval()
    saes = {RESID: random_sae(D_MODEL, 64, RESID, 1), HOOK_Z: random_sae(32, 64, HOOK_Z, 2)}
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, D_VOCAB, (BATCH, SEQ), generator=gen)
    corrupt = clean.clone()
    corrupt[:, 2] = (clean[:, 2] + 1) % D_VOCAB
    metric = logit_diff_metric([1, 2])
    with torch.no_grad():
        ref = bridge(clean)
    with attach(bridge, saes, error_term=True) as att:
        canonical = att.canonical_hook_name(RESID)
        assert canonical != RESID
        torch.testing.assert_close(run_with_steering(att, clean, Steer(canonical, 3, 0.0)), ref, atol=1e-5, rtol=0)
        assert ablate_features(att, clean, {canonical: [1, 2]}, metric, positions=[]).delta == 0.0
        ig = attribute(att, clean, corrupt, metric, method="ig", ig_steps=32, hooks=[RESID], progress=False)
        target = ig.metric_corrupted - ig.metric_clean
        assert abs(ig.total() - target) <= 0.02 * abs(target)
        atp = attribute(att, clean, corrupt, metric, progress=False)
        check = verify_attribution(att, clean, corrupt, atp, metric, k=20, progress=False)
    assert check.attrs["spearman"] > 0.7


def test_plots_take_plain_data(tiny):
    from gba_lens.circuits import plot_attribution_heatmap, plot_feature_heatmap

    scores = torch.zeros(SEQ, 64)
    scores[2, 5], scores[4, 7] = 1.0, -2.0
    fig = plot_feature_heatmap(scores, torch.ones(SEQ), k=5, title="plain")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["f7", "f5", "error"]
    with pytest.raises(ValueError, match=r"\[pos, d_sae\]"):
        plot_feature_heatmap(torch.zeros(64))
    model, saes, clean, corrupt, metric, _ = tiny
    res = attribute(model, clean, corrupt, metric, saes=saes, progress=False)
    fig = plot_attribution_heatmap(res, RESID, k=3, include_error=False)
    assert len(fig.axes[0].get_yticklabels()) == 3
