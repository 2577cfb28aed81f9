"""Tests for gba_lens.adapters.attach on HookedTransformer, HookedSAETransformer, TransformerBridge.

References: with error_term=True the output must equal the clean model's; with error_term=False it
must equal SAELens's own splicing (HookedSAETransformer.run_with_saes, or SAETransformerBridge for
the bridges) for the same SAE and weights. All models are tiny and built from configs (no hub).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gba_lens.adapters import Attachment, UnknownHookNameError, attach

from adapter_builders import (
    ARCHS,
    ATOL,
    D_MODEL,
    get_model,
    HOOKS,
    KINDS,
    logits,
    make_sae,
    make_saes,
    N_HEADS,
    reference_model,
    snapshot,
    twin,
)


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_error_term_leaves_output_unchanged(kind: str, arch: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    clean = logits(model, tokens)
    saes = make_saes(arch)
    with attach(model, saes, error_term=True) as att:
        spliced = logits(model, tokens)
        assert att.error_term and set(att.saes) == set(HOOKS)
        # Sanity: the SAEs really are in the path (no error term => different output).
    torch.testing.assert_close(spliced, clean, atol=ATOL, rtol=ATOL)
    with attach(model, saes, error_term=False):
        assert (logits(model, tokens) - clean).abs().max() > 1e-2
    torch.testing.assert_close(logits(model, tokens), clean, atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_without_error_term_matches_sae_lens(kind: str, arch: str, tokens: torch.Tensor) -> None:
    model, ref = get_model(kind), reference_model(kind)
    torch.testing.assert_close(logits(ref, tokens), logits(model, tokens), atol=0, rtol=0)
    saes = make_saes(arch)
    # SAELens takes the hook from cfg.metadata.hook_name and needs reshape mode for hook_z:
    # the flat-d_in hook_z SAE is compared with its reshape_activations="hook_z" twin.
    ref_saes = [
        twin(s, "hook_z") if h.endswith("hook_z") and s.cfg.reshape_activations == "none" else s
        for h, s in saes.items()
    ]
    with torch.no_grad():
        expected = ref.run_with_saes(tokens, saes=ref_saes)
    with attach(model, saes) as att:
        got = logits(model, tokens)
        assert not att.error_term
    assert (expected - logits(model, tokens)).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL)
    # One SAE at a time too (a multi-SAE mismatch could hide a per-hook one).
    for hook, sae in list(saes.items())[:3]:
        with torch.no_grad():
            expected = ref.run_with_saes(tokens, saes=[sae])
        with attach(model, {hook: sae}):
            torch.testing.assert_close(logits(model, tokens), expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_cache_exposes_sae_hook_points(kind: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    hz, hr = "blocks.1.attn.hook_z", "blocks.0.hook_resid_post"
    saes = {hz: make_sae("jumprelu", 64, hz, "hook_z", 3), hr: make_sae("topk", 64, hr, seed=4)}
    _, clean_cache = model.run_with_cache(tokens, names_filter=[hz, hr])
    with attach(model, saes, error_term=True) as att:
        names = [att.sae_hook_name(h, s) for h in saes for s in (
            "hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
            "hook_sae_error", "hook_sae_output")]
        assert att.feature_hook_name(hz) == f"{hz}.hook_sae_acts_post"
        assert att.error_hook_name(hz) == f"{hz}.hook_sae_error"
        assert att.recons_hook_name(hr) == f"{hr}.hook_sae_recons"
        assert att.splice(hz).sae is saes[hz] and att.splice(hr).head_shape is None
        _, cache = model.run_with_cache(tokens, names_filter=names)
        assert set(names) <= set(cache.keys())
        for hook, sae in saes.items():
            x = clean_cache[hook]
            acts = cache[att.feature_hook_name(hook)]
            recons = cache[att.recons_hook_name(hook)]
            error = cache[att.error_hook_name(hook)]
            assert acts.shape == (*tokens.shape, 96)
            assert (acts > 0).float().mean() < 0.9  # sparse-ish: the gate works
            torch.testing.assert_close(cache[att.input_hook_name(hook)], x.flatten(2))
            with torch.no_grad():
                torch.testing.assert_close(acts, sae.encode(x))
            assert recons.shape == (*tokens.shape, 64)  # SAE space (heads flattened)
            assert error.shape == x.shape  # hook space
            torch.testing.assert_close(error, x - recons.reshape(x.shape), atol=ATOL, rtol=0)
            torch.testing.assert_close(cache[att.output_hook_name(hook)], x, atol=ATOL, rtol=0)
        if kind.startswith("bridge"):
            canon = att.canonical_hook_name(hr)
            assert canon == "blocks.0.hook_out" and att.canonical_hook_name(hz) == (
                "blocks.1.attn.o.hook_in")
            _, c2 = model.run_with_cache(tokens, names_filter=[f"{canon}.hook_sae_acts_post"])
            torch.testing.assert_close(c2[f"{canon}.hook_sae_acts_post"],
                                       cache[att.feature_hook_name(hr)])
            assert att.feature_hook_name(canon) == f"{canon}.hook_sae_acts_post"
        else:
            assert att.canonical_hook_name(hr) == hr
        # Unfiltered run_with_cache sees them too.
        _, full = model.run_with_cache(tokens)
        assert att.feature_hook_name(hz) in full.keys()


@pytest.mark.parametrize("kind", KINDS)
def test_run_with_hooks_can_ablate_features(kind: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    hook = "blocks.0.hook_resid_post"
    sae = make_sae("standard", 64, hook, seed=5)
    clean_logits, clean_cache = model.run_with_cache(tokens, names_filter=[hook])
    x = clean_cache[hook]
    seen: dict[str, torch.Tensor] = {}

    def zero(acts: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.zeros_like(acts)

    def keep(t: torch.Tensor, hook: Any) -> None:
        seen[hook.name] = t.detach().clone()

    with attach(model, {hook: sae}, error_term=True) as att:
        with torch.no_grad():
            out = model.run_with_hooks(tokens, fwd_hooks=[
                (att.feature_hook_name(hook), zero), (att.output_hook_name(hook), keep),
                (att.error_hook_name(hook), keep),
                (hook, lambda t, hook: seen.__setitem__("at_hook", t.detach().clone()))])
            recons_clean = sae.decode(sae.encode(x))
        out_name = [k for k in seen if k.endswith("hook_sae_output")][0]
        err_name = [k for k in seen if k.endswith("hook_sae_error")][0]
        # Ablating every feature leaves b_dec + the clean error (not re-computed from ablated acts).
        torch.testing.assert_close(seen[err_name], x - recons_clean, atol=ATOL, rtol=0)
        torch.testing.assert_close(seen[out_name], sae.b_dec.detach() + x - recons_clean,
                                   atol=ATOL, rtol=0)
        assert (out - clean_logits).abs().max() > 1e-2
        # The splice runs first at its hook point: hooks on the spliced name see its output.
        torch.testing.assert_close(seen["at_hook"], seen[out_name], atol=0, rtol=0)
        # The hook on the spliced name itself sees (and can change) what flows downstream.
        with torch.no_grad():
            patched = model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda t, hook: t * 0)])
        assert (patched - clean_logits).abs().max() > 1e-2
        torch.testing.assert_close(logits(model, tokens), clean_logits, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_features_error_and_upstream(kind: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    hook, upstream = "blocks.1.hook_resid_mid", "blocks.0.hook_resid_post"
    sae = make_sae("jumprelu", 64, hook, seed=6)
    grads: dict[str, torch.Tensor] = {}

    def grab(key: str) -> Callable[..., None]:
        def fn(grad: torch.Tensor, hook: Any) -> None:
            grads[key] = grad.detach().clone()
        return fn

    def run(bwd: list[tuple[str, Callable[..., None]]]) -> None:
        model.zero_grad(set_to_none=True)
        out = model.run_with_hooks(tokens, bwd_hooks=bwd)
        out.log_softmax(-1)[..., 7].sum().backward()

    run([(hook, grab("clean_at_hook")), (upstream, grab("clean_upstream"))])
    with attach(model, {hook: sae}, error_term=True) as att:
        run([(att.feature_hook_name(hook), grab("acts")), (att.error_hook_name(hook), grab("err")),
             (att.output_hook_name(hook), grab("out")), (upstream, grab("upstream"))])
    for key in ("clean_at_hook", "clean_upstream", "acts", "err", "out", "upstream"):
        assert key in grads, key
    assert grads["err"].abs().sum() > 0 and grads["acts"].abs().sum() > 0
    torch.testing.assert_close(grads["err"], grads["out"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(grads["out"], grads["clean_at_hook"], atol=ATOL, rtol=ATOL)
    # Features: the output's gradient through the decoder only (the error does not cancel it).
    torch.testing.assert_close(grads["acts"], grads["out"] @ sae.W_dec.detach().T,
                               atol=ATOL, rtol=ATOL)
    # Upstream of the splice the clean model's gradient is recovered exactly.
    torch.testing.assert_close(grads["upstream"], grads["clean_upstream"], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_detach_restores_model_exactly(kind: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    user_hook_calls: list[int] = []
    model.hook_dict["blocks.0.hook_resid_post"].add_hook(
        lambda t, hook: user_hook_calls.append(1), is_permanent=True)
    try:
        before, clean = snapshot(model), logits(model, tokens)
        saes = make_saes("topk")
        # Context manager, body raises.
        with pytest.raises(RuntimeError, match="boom"):
            with attach(model, saes, error_term=True):
                assert snapshot(model) != before
                raise RuntimeError("boom")
        assert snapshot(model) == before
        # Forward pass raises inside the spliced SAE (a hook on the features).
        def bad(t: torch.Tensor, hook: Any) -> None:
            raise ValueError("bad hook")
        with attach(model, saes) as att:
            with pytest.raises(ValueError, match="bad hook"):
                model.run_with_hooks(tokens, fwd_hooks=[
                    (att.feature_hook_name("blocks.0.hook_resid_post"), bad)])
        assert snapshot(model) == before
        # Permanent form; detach twice is fine; a detached attachment says so.
        att = attach(model, saes, error_term=False)
        assert att.attached and "attached" in repr(att)
        att.detach()
        att.detach()
        assert not att.attached and snapshot(model) == before
        # The same SAEs can be attached again after detaching.
        with attach(model, saes, error_term=True):
            torch.testing.assert_close(logits(model, tokens), clean, atol=ATOL, rtol=ATOL)
        assert snapshot(model) == before
        torch.testing.assert_close(logits(model, tokens), clean, atol=0, rtol=0)
        assert user_hook_calls  # the user's permanent hook survived all of it
    finally:
        model.hook_dict["blocks.0.hook_resid_post"].remove_hooks(including_permanent=True)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_is_rejected_before_anything_changes(kind: str) -> None:
    model = get_model(kind)
    before = snapshot(model)
    good = make_sae("standard", 64, "blocks.0.hook_resid_post")
    # Unknown name: clear error with close matches (the bridge would silently ignore it).
    with pytest.raises(UnknownHookNameError, match="blocks.0.hook_resid_post"):
        attach(model, {"blocks.0.hook_resid_psot": good})
    with pytest.raises(KeyError):
        attach(model, {"blocks.0.hook_resid_psot": good})
    # Width mismatch, also when a valid SAE comes first (nothing may stay attached).
    with pytest.raises(ValueError, match=r"d_in=64 does not match hook 'blocks.0.mlp.hook_post'"):
        attach(model, {"blocks.0.hook_resid_pre": make_sae("topk", 64, "blocks.0.hook_resid_pre"),
                       "blocks.0.mlp.hook_post": make_sae("standard", 64, "mlp.hook_post")})
    with pytest.raises(ValueError, match="d_in=48 does not match hook 'blocks.0.attn.hook_z'"):
        attach(model, {"blocks.0.attn.hook_z": make_sae("standard", 48, "blocks.0.attn.hook_z")})
    with pytest.raises(ValueError, match="reshape_activations='hook_z'"):
        attach(model, {"blocks.0.hook_resid_pre": make_sae("standard", 64, "x.hook_z", "hook_z")})
    # Hooks that need a switch first.
    for name, setter in [("blocks.0.attn.hook_result", "set_use_attn_result"),
                         ("blocks.0.hook_attn_in", "set_use_attn_in"),
                         ("blocks.0.hook_q_input", "set_use_split_qkv_input"),
                         ("blocks.0.hook_mlp_in", "set_use_hook_mlp_in")]:
        if name in model.hook_dict:
            with pytest.raises(ValueError, match=setter):
                attach(model, {name: make_sae("standard", 64, name)})
    # Device mismatch (meta stands in for another device on a CPU-only machine).
    with pytest.raises(ValueError, match="sae.to"):
        on_meta = make_sae("standard", 64, "blocks.0.hook_resid_pre").to("meta")
        attach(model, {"blocks.0.hook_resid_pre": on_meta})
    # Types, emptiness, duplicates.
    with pytest.raises(TypeError, match="not a sae_lens.SAE"):
        attach(model, {"blocks.0.hook_resid_pre": torch.nn.Linear(64, 64)})  # type: ignore
    with pytest.raises(ValueError, match="empty"):
        attach(model, {})
    with pytest.raises(TypeError, match="mapping"):
        attach(model, [good])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error_term"):
        attach(model, {"blocks.0.hook_resid_post": good}, error_term=1)  # type: ignore
    with pytest.raises(ValueError, match="same SAE object"):
        attach(model, {"blocks.0.hook_resid_pre": good, "blocks.1.hook_resid_pre": good})
    assert snapshot(model) == before
    with attach(model, {"blocks.0.hook_resid_post": good}) as att:
        with pytest.raises(ValueError, match="already attached"):
            attach(model, {"blocks.1.hook_resid_pre": good})
        with pytest.raises(ValueError, match="already attached"):
            attach(model, {"blocks.0.hook_resid_post": make_sae("standard", 64, "h")})
        with pytest.raises(ValueError, match="error_term=False"):
            att.error_hook_name("blocks.0.hook_resid_post")
        with pytest.raises(KeyError):
            att.feature_hook_name("blocks.1.hook_resid_post")
    assert snapshot(model) == before
    if kind.startswith("bridge"):  # legacy and canonical names of one hook point
        with pytest.raises(ValueError, match="same hook point"):
            attach(model, {"blocks.0.hook_resid_post": good,
                           "blocks.0.hook_out": make_sae("standard", 64, "h")})


@pytest.mark.parametrize("kind", ["hooked", "bridge_hf"])  # the native bridge has no hook_result
def test_switched_on_hook_and_dtype_cast(kind: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    clean = logits(model, tokens)
    # attn.hook_result works once switched on ([batch, pos, n_heads, d_model] -> flattened).
    model.set_use_attn_result(True)
    try:
        name = "blocks.0.attn.hook_result"
        sae = make_sae("standard", N_HEADS * D_MODEL, name)
        with attach(model, {name: sae}, error_term=True):
            torch.testing.assert_close(logits(model, tokens), clean, atol=ATOL, rtol=ATOL)
    finally:
        model.set_use_attn_result(False)
    # A float64 SAE on a float32 model: warns, runs in float64, casts the output back.
    sae64 = make_sae("jumprelu", 64, "blocks.0.hook_resid_mid").to(torch.float64)
    with pytest.warns(UserWarning, match="cast"):
        att = attach(model, {"blocks.0.hook_resid_mid": sae64}, error_term=True)
    with att:
        out = logits(model, tokens)
        _, cache = model.run_with_cache(tokens, names_filter=[att.feature_hook_name(
            "blocks.0.hook_resid_mid")])
    assert out.dtype == torch.float32
    assert cache[att.feature_hook_name("blocks.0.hook_resid_mid")].dtype == torch.float64
    torch.testing.assert_close(out, clean, atol=ATOL, rtol=ATOL)
    assert isinstance(att, Attachment) and sae64.dtype == torch.float64  # SAE not modified


def test_public_names_and_no_training_imports() -> None:
    import gba_lens
    import gba_lens.adapters as adapters

    assert gba_lens.attach is attach and gba_lens.Attachment is Attachment
    # Adapters are inference code: none of their modules imports gba_lens training code.
    files = sorted(Path(adapters.__file__).parent.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("gba_lens.saes", "gba_lens.training")), (path, name)
