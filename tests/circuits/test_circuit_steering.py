"""Circuit utilities: steering (Steer / Clamp), generation and sweeps."""

from __future__ import annotations

import pytest
import torch

from gba_lens import attach
from gba_lens.circuits import (
    Clamp,
    Steer,
    generate_with_steering,
    run_with_steering,
    steering,
    steering_direction,
    steering_sweep,
    token_prob_metric,
)

from circuit_builders import BATCH, HOOK_Z, RESID, SEQ


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
