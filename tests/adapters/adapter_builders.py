"""Shared builders of the adapter tests: tiny models of every supported kind, random SAEs of
every architecture, and a snapshot of everything attach() may touch. All built from configs."""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import (
    HookedSAETransformer,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.analysis.sae_transformer_bridge import SAETransformerBridge
from sae_lens.saes.sae import SAE, SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig, TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

D_MODEL, N_HEADS, D_HEAD, D_MLP, N_LAYERS, D_VOCAB, N_CTX = 64, 4, 16, 256, 2, 100, 32
KINDS = ["hooked", "hooked_sae", "bridge_native", "bridge_hf"]
ARCHS = ["standard", "topk", "jumprelu", "jumprelu_per_token"]
"""``jumprelu_per_token``: each input scaled to norm sqrt(d_in) and the output back
(``normalize_activations="constant_norm_rescale"``, as GBA's ``input_norm="per_token"`` exports)."""
ATOL = 1e-5

# Every hook kind SAEs are trained on, spread over both layers; hook_z twice (SAELens's
# reshape_activations="hook_z" SAE, and a plain SAE with d_in = n_heads * d_head).
HOOKS: dict[str, tuple[int, str]] = {
    "blocks.0.hook_resid_pre": (D_MODEL, "none"),
    "blocks.0.attn.hook_z": (N_HEADS * D_HEAD, "hook_z"),
    "blocks.0.mlp.hook_post": (D_MLP, "none"),
    "blocks.0.hook_resid_post": (D_MODEL, "none"),
    "blocks.1.hook_resid_mid": (D_MODEL, "none"),
    "blocks.1.hook_attn_out": (D_MODEL, "none"),
    "blocks.1.attn.hook_z": (N_HEADS * D_HEAD, "none"),
    "blocks.1.hook_mlp_out": (D_MODEL, "none"),
}


# ---------------------------------------------------------------------------- model builders
def _ht_cfg() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=N_LAYERS, d_model=D_MODEL, n_ctx=N_CTX, d_head=D_HEAD, n_heads=N_HEADS,
        d_mlp=D_MLP, d_vocab=D_VOCAB, act_fn="gelu", normalization_type="LN", seed=0,
    )


def _build(kind: str) -> Any:
    if kind == "hooked":
        return HookedTransformer(_ht_cfg()).eval()
    if kind == "hooked_sae":
        return HookedSAETransformer(_ht_cfg()).eval()
    if kind == "bridge_native":
        return TransformerBridge.boot_native(
            TransformerBridgeConfig(
                d_model=D_MODEL, d_head=D_HEAD, n_layers=N_LAYERS, n_ctx=N_CTX,
                n_heads=N_HEADS, d_vocab=D_VOCAB, act_fn="gelu", seed=0,
            )
        ).eval()
    if kind == "bridge_hf":
        # Private module of TransformerLens: the one place it is imported.
        from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(n_layer=N_LAYERS, n_embd=D_MODEL, n_head=N_HEADS, n_positions=N_CTX,
                         vocab_size=D_VOCAB, n_inner=D_MLP)
        torch.manual_seed(0)
        hf = GPT2LMHeadModel(cfg).eval()  # eval: a freshly built HF model has dropout on
        return build_bridge_from_module(hf, "GPT2LMHeadModel", hf_config=cfg).eval()
    raise ValueError(kind)


_MODELS: dict[str, Any] = {}


def get_model(kind: str) -> Any:
    if kind not in _MODELS:
        _MODELS[kind] = _build(kind)
    return _MODELS[kind]


def reference_model(kind: str) -> Any:
    """SAELens's own splicing model with the same weights as get_model(kind)."""
    key = f"ref_{kind}"
    if key not in _MODELS:
        if kind in ("hooked", "hooked_sae"):
            ref = HookedSAETransformer(_ht_cfg()).eval()
            ref.load_state_dict(get_model(kind).state_dict())
        else:
            ref = _build(kind)  # same seed -> same weights (asserted in the test)
            # How SAELens itself turns a bridge into an SAETransformerBridge (boot_transformers).
            ref.__class__ = SAETransformerBridge
            ref._acts_to_saes = {}
            ref._transcoder_output_hooks = {}
        _MODELS[key] = ref
    return _MODELS[key]


# ---------------------------------------------------------------------------- SAE builders
def make_sae(arch: str, d_in: int, hook_name: str, reshape: str = "none", seed: int = 0,
             d_sae: int = 96) -> SAE[Any]:
    meta = SAEMetadata(hook_name=hook_name)
    if arch == "standard":
        sae: SAE[Any] = StandardSAE(StandardSAEConfig(
            d_in=d_in, d_sae=d_sae, reshape_activations=reshape, metadata=meta))
    elif arch == "topk":
        sae = TopKSAE(TopKSAEConfig(
            d_in=d_in, d_sae=d_sae, k=8, reshape_activations=reshape, metadata=meta))
    elif arch in ("jumprelu", "jumprelu_per_token"):
        sae = JumpReLUSAE(JumpReLUSAEConfig(
            d_in=d_in, d_sae=d_sae, reshape_activations=reshape, metadata=meta,
            normalize_activations="constant_norm_rescale" if arch == "jumprelu_per_token" else "none"))
    else:
        raise ValueError(arch)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name in ("W_enc", "W_dec"):
                param.copy_(noise / d_in**0.5)
            elif name == "threshold":
                param.copy_(noise.abs() * 0.05)
            else:
                param.copy_(noise * 0.05)
    return sae


def twin(sae: SAE[Any], reshape: str) -> SAE[Any]:
    """Same weights, different reshape_activations (for comparing flat hook_z SAEs)."""
    cfg = type(sae.cfg).from_dict({**sae.cfg.to_dict(), "reshape_activations": reshape})
    other = type(sae)(cfg)
    other.load_state_dict(sae.state_dict())
    return other


def make_saes(arch: str, hooks: dict[str, tuple[int, str]] = HOOKS) -> dict[str, SAE[Any]]:
    return {h: make_sae(arch, d, h, r, seed=i) for i, (h, (d, r)) in enumerate(hooks.items())}


# ---------------------------------------------------------------------------- snapshots
def snapshot(model: Any) -> dict[str, Any]:
    """Everything attach() may touch: hook_dict, module tree, hooks on every hook point."""
    hook_dict = dict(model.hook_dict)
    return {
        "hook_dict": {k: id(v) for k, v in hook_dict.items()},
        "hp_names": {k: v.name for k, v in hook_dict.items()},
        "modules": [(n, id(m)) for n, m in model.named_modules()],
        "hooks": {
            k: (len(v.fwd_hooks), len(v.bwd_hooks), len(v._forward_hooks), len(v._backward_hooks))
            for k, v in hook_dict.items()
        },
        "registry": sorted(getattr(model, "_hook_registry", {})),
    }


def logits(model: Any, toks: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(toks)
