"""Circuit utilities: ablation, steering, attribution (AtP / IG), exact patching, W&B logging.

Small models only: a tiny HookedTransformer from a config (random SAEs at a residual hook and at
``attn.hook_z``) for the algebra, and the committed offline IOI model with small GBA SAEs trained
here on its activations for the IOI behaviour.
"""

from __future__ import annotations

import ast
import os
import warnings
from pathlib import Path

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from gba_lens import attach
from gba_lens.circuits import (
    Clamp,
    Steer,
    WandbLogger,
    ablate_features,
    ablation_hooks,
    ablation_sweep,
    attribute,
    exact_patching,
    generate_with_steering,
    logit_diff_metric,
    run_with_steering,
    steering,
    steering_direction,
    steering_sweep,
    token_prob_metric,
    verify_attribution,
)
from gba_lens.circuits.ioi import mean_logit_diff

warnings.filterwarnings("ignore", category=DeprecationWarning)

SAE_SEED = int(os.environ.get("GBA_LENS_TEST_SAE_SEED", "0"))  # to check robustness across seeds
RESID = "blocks.1.hook_resid_pre"
HOOK_Z = "blocks.0.attn.hook_z"
D_MODEL, D_VOCAB, BATCH, SEQ = 32, 50, 4, 10


def _sae(d_in: int, d_sae: int, hook: str, seed: int, reshape: str = "none") -> StandardSAE:
    """A random SAE with tied unit-norm directions and a small negative bias (sparse-ish)."""
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, reshape_activations=reshape,
                                        metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_dec.normal_()
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.fill_(-0.1)
    return sae


@pytest.fixture(scope="module")
def tiny():
    cfg = HookedTransformerConfig(n_layers=2, d_model=D_MODEL, n_ctx=16, d_head=8, n_heads=4, d_mlp=128,
                                  d_vocab=D_VOCAB, act_fn="gelu", normalization_type="LN", seed=0)
    model = HookedTransformer(cfg).eval()
    saes = {RESID: _sae(D_MODEL, 64, RESID, 1), HOOK_Z: _sae(32, 64, HOOK_Z, 2, reshape="hook_z")}
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, D_VOCAB, (BATCH, SEQ), generator=gen)
    corrupt = clean.clone()
    corrupt[:, 3] = torch.randint(0, D_VOCAB, (BATCH,), generator=gen)
    metric = logit_diff_metric(torch.tensor([[1, 2]] * BATCH))
    with torch.no_grad():
        ref_logits = model(clean)
    return model, saes, clean, corrupt, metric, ref_logits


# ------------------------------------------------------------------------------------ ablation
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


# ------------------------------------------------------------------------------------ steering
def test_steering_by_zero_leaves_logits_unchanged(tiny):
    model, saes, clean, _, metric, ref = tiny
    logits = run_with_steering(model, clean, [Steer(RESID, 3, 0.0), Steer(HOOK_Z, 7, 0.0)], saes=saes)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)
    with attach(model, saes, error_term=True) as att:
        with torch.no_grad():
            attached = model(clean)
        assert torch.equal(run_with_steering(att, clean, Steer(RESID, 3, 0.0)), attached)
        df = steering_sweep(att, clean, {RESID: [3]}, [0.0, 2.0], metric, progress=False)
    assert df["kl"].iloc[0] == pytest.approx(0.0, abs=1e-7)
    assert df["metric"].iloc[0] == pytest.approx(df.attrs["metric_clean"], abs=1e-6)
    assert df["kl"].iloc[1] > 1e-4


@pytest.mark.parametrize("hook", [RESID, HOOK_Z])
def test_steering_raises_the_features_own_activation(tiny, hook):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        name = att.feature_hook_name(hook)
        for feature in (3, 11, 40):
            df = steering_sweep(att, clean, {hook: [feature]}, [0.0, 1.0, 2.0, 4.0], metric, progress=False)
            acts = df["feature_act"].to_numpy()
            assert (acts[1:] > acts[:-1]).all() and acts[-1] > acts[0] + 2.0, (feature, acts)
            with torch.no_grad():
                before = model.run_with_cache(clean, names_filter=name)[1][name][..., feature]
                with steering(att, Steer(hook, feature, 3.0, positions=[4])):
                    after = model.run_with_cache(clean, names_filter=name)[1][name][..., feature]
            assert (after[:, 4] > before[:, 4] + 1.0).all()
            others = [p for p in range(SEQ) if p != 4]  # the SAE at the hook sees only position 4 move
            torch.testing.assert_close(after[:, others], before[:, others])


def test_steer_adds_direction_and_clamp_sets_value(tiny):
    model, saes, clean, _, _, _ = tiny
    with attach(model, saes, error_term=True) as att:
        out_name = att.output_hook_name(RESID)
        d = steering_direction(att, RESID, 6)
        torch.testing.assert_close(d, saes[RESID].W_dec[6].detach())
        assert steering_direction(att, HOOK_Z, 6).shape == (4, 8)
        assert steering_direction(att, RESID, 6, normalize=True).norm() == pytest.approx(1.0)
        with torch.no_grad():
            base = model.run_with_cache(clean, names_filter=out_name)[1][out_name]
            with steering(att, [Steer(RESID, 6, 2.5, positions=[1, 3])]):
                steered = model.run_with_cache(clean, names_filter=out_name)[1][out_name]
        expected = base.clone()
        expected[:, [1, 3]] += 2.5 * d
        torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)

        fname = att.feature_hook_name(RESID)
        with torch.no_grad():
            cache = model.run_with_cache(clean, names_filter=[fname, out_name])[1]
            with steering(att, Clamp(RESID, 8, 4.0, positions=torch.full((BATCH,), 2))):
                clamped = model.run_with_cache(clean, names_filter=[fname, out_name])[1]
        assert torch.all(clamped[fname][:, 2, 8] == 4.0)
        torch.testing.assert_close(clamped[fname][:, 3:, 8], cache[fname][:, 3:, 8])
        change = (4.0 - cache[fname][:, 2, 8])[:, None] * saes[RESID].W_dec[8].detach()
        torch.testing.assert_close(clamped[out_name][:, 2] - cache[out_name][:, 2], change, atol=1e-5, rtol=0)
        # several features at once, sweep in clamp mode
        df = steering_sweep(att, clean, [(RESID, 8), (HOOK_Z, 2)], [0.0, 5.0], token_prob_metric(1), mode="clamp", progress=False)
        assert df["feature_act"].tolist() == pytest.approx([0.0, 5.0])


def test_generate_with_steering(tiny):
    model, saes, clean, _, _, _ = tiny
    prompt = clean[:1, :4]
    # This tiny model has no tokenizer; TransformerLens 3.9's KV-cache path of generate() needs one.
    kw = dict(max_new_tokens=6, stop_at_eos=False, use_past_kv_cache=False, do_sample=False)
    with attach(model, saes, error_term=True) as att:
        plain = generate_with_steering(att, prompt, Steer(RESID, 3, 0.0), return_type="tokens", **kw)
        with torch.no_grad():
            reference = model.generate(prompt, verbose=False, **kw)
        assert torch.equal(plain, reference)
        strong = generate_with_steering(att, prompt, [Steer(RESID, 3, 40.0), Steer(HOOK_Z, 1, 40.0)],
                                        return_type="tokens", **kw)
        at_pos = generate_with_steering(att, prompt, Steer(RESID, 3, 40.0, positions=[1]), return_type="tokens", **kw)
    assert strong.shape == at_pos.shape == (1, 10)
    assert torch.equal(strong[:, :4], prompt)
    assert not torch.equal(strong, plain)


# --------------------------------------------------------------------------------- attribution
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
    saes = {RESID: _sae(D_MODEL, 64, RESID, 1), HOOK_Z: _sae(32, 64, HOOK_Z, 2)}
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


# -------------------------------------------------------------------------------------- IOI
@pytest.fixture(scope="module")
def ioi():
    """The offline IOI model with small GBA SAEs trained here (a few seconds)."""
    from gba_lens.models.ioi_model import ioi_heldout_prompts, load_ioi_model
    from gba_lens.training.methods import build_sae
    from gba_lens.training.train import TrainConfig, train_sae

    model = load_ioi_model()
    train = ioi_heldout_prompts(model, "train", n_prompts=300, seed=1)
    hooks = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.1.hook_resid_pre"]
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.cat([train.clean_tokens, train.corrupted_tokens]),
                                        names_filter=lambda n: n in hooks)
    real = torch.cat([train.attention_mask] * 2).bool()
    saes = {}
    for i, hook in enumerate(hooks):
        acts = cache[hook]
        acts = (acts.flatten(-2) if acts.ndim == 4 else acts)[real]
        gen = torch.Generator().manual_seed(i)

        def batches(acts=acts, gen=gen):
            while True:
                yield acts[torch.randint(0, acts.shape[0], (256,), generator=gen)]

        torch.manual_seed(SAE_SEED + i)
        sae = build_sae("gba", acts.shape[-1], 128)
        train_sae(sae, batches(), TrainConfig(total_samples=256 * 300, batch_size=256, lr=3e-3))
        saes[hook] = sae.to_inference_sae()
    prompts = ioi_heldout_prompts(model, "pairs", n_prompts=64, seed=2)
    return model, saes, prompts


def test_ioi_attribution_finds_features_that_matter(ioi):
    model, saes, ps = ioi
    metric = lambda logits: mean_logit_diff(logits, ps)  # noqa: E731
    with attach(model, saes, error_term=True) as att:
        res = attribute(att, ps.clean_tokens, ps.corrupted_tokens, metric, progress=False)
        assert res.metric_clean > 5 and abs(res.metric_corrupted) < 1.5
        check = verify_attribution(att, ps.clean_tokens, ps.corrupted_tokens, res, metric, k=40, progress=False)
        # zero-ablate the k features with the most negative AtP totals vs k random active features
        k, lines = 10, []
        for hook, min_ratio in (("blocks.0.attn.hook_z", 3.0), ("blocks.1.attn.hook_z", 3.0), (RESID, 2.0)):
            top = torch.argsort(res.feature_totals(hook))[:k].tolist()
            top_delta = ablate_features(att, ps.clean_tokens, {hook: top}, metric).delta
            name = att.feature_hook_name(hook)
            with torch.no_grad():
                acts = model.run_with_cache(ps.clean_tokens, names_filter=name)[1][name]
            active = torch.nonzero((acts[ps.attention_mask.bool()] > 0).any(0)).flatten()
            gen = torch.Generator().manual_seed(0)
            random_deltas = [
                ablate_features(att, ps.clean_tokens, {hook: active[torch.randperm(len(active), generator=gen)[:k]].tolist()},
                                metric).delta
                for _ in range(20)
            ]
            random_delta = sum(random_deltas) / len(random_deltas)
            lines.append(f"{hook}: top-{k} ablation {top_delta:+.2f}, random-{k} (active, mean of 20) "
                         f"{random_delta:+.2f} ({top_delta / random_delta:.1f}x)")
            assert top_delta < -0.5
            assert top_delta < min_ratio * random_delta  # both negative: top lowers it min_ratio x more
        ig = attribute(att, ps.clean_tokens, ps.corrupted_tokens, metric, method="ig", ig_steps=32,
                       hooks=["blocks.1.hook_resid_pre"], progress=False)
    target = ig.metric_corrupted - ig.metric_clean
    completeness = abs(ig.total() - target) / abs(target)
    print(f"\nIOI model: clean logit diff {res.metric_clean:.2f}, corrupted {res.metric_corrupted:.2f}; "
          f"AtP vs exact Spearman {check.attrs['spearman']:.3f} (top 40 nodes); IG completeness error "
          f"{completeness:.2e}; " + "; ".join(lines))
    assert check.attrs["spearman"] > 0.6
    assert completeness <= 0.02


# ------------------------------------------------------------------------------------ logging
def _offline_files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(f"wandb/offline-run-*/files/media/**/{pattern}"))


def test_wandb_logging_offline(tiny, tmp_path):
    model, saes, clean, corrupt, metric, _ = tiny
    logger = WandbLogger(project="circuits-test", dir=str(tmp_path), mode="offline")
    with attach(model, saes, error_term=True) as att:
        res = attribute(att, clean, corrupt, metric, logger=logger, progress=False)
        steering_sweep(att, clean, {RESID: [3]}, [0.0, 1.0], metric, logger=logger, progress=False)
        ablation_sweep(att, clean, metric, logger=logger, progress=False)
    run_dir = Path(logger.run.dir).parent
    logger.finish()
    assert logger.errors == []
    tables = list((run_dir / "files" / "media" / "table").rglob("*.table.json"))
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(tables) == 3, tables
    assert len(images) >= 1 + len(res.hooks)  # steering plot + one heatmap per hook (+ ablation bars)


def test_wandb_failure_never_crashes(tiny, monkeypatch):
    import wandb

    model, saes, clean, corrupt, metric, _ = tiny

    def broken(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    logger = WandbLogger()
    with pytest.warns(UserWarning, match="W&B logging failed"):
        res = attribute(model, clean, corrupt, metric, saes=saes, logger=logger, progress=False)
    assert res.feature_scores and not logger.enabled
    res2 = attribute(model, clean, corrupt, metric, saes=saes, logger=logger, progress=False)  # silent now
    assert res2.total() == pytest.approx(res.total())


# ------------------------------------------------------------------------------------- hygiene
def test_circuits_never_imports_training_code():
    """No module reachable by imports from gba_lens.circuits is gba_lens.training (AST walk)."""
    root = Path(__file__).parent.parent
    seen: set[str] = set()
    todo = [f"gba_lens.circuits.{p.stem}" for p in (root / "gba_lens" / "circuits").glob("*.py")]
    todo = [m.replace(".__init__", "") for m in todo]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        assert not module.startswith("gba_lens.training"), f"reached {module}"
        path = root / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = root / module.replace(".", "/") / "__init__.py"
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("gba_lens"):
                    parts = name.split(".")
                    todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    assert "gba_lens.adapters.splice" in seen and "gba_lens.circuits.ioi" in seen
