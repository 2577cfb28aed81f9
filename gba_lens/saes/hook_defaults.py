"""GBA options whose default follows the hook the SAE reads: what reads an activation decides them.

A residual-stream activation (``hook_resid_pre``, ``_mid``, ``_post``, or a bridge's ``blocks.L.hook_in`` ...)
is read by the next block's LayerNorm, which divides each token by its own norm, so the model sees each
token's error over that norm. There, with the defaults' training (``find_l0``, or ``target_l0``: the level
told; the paper's rule keeps the paper's inputs and outputs), unset options resolve to:

- ``input_norm="per_token"``: each input divided by its own norm before the encoder reads it, so that which
  latents fire does not depend on a token's scale (:mod:`gba_lens.saes.input_scaling`);
- ``activation_bias=True``: each latent's learned output offset (JumpReLU gate only);
- ``refit_error="relative"``: the decoder refit lowers each row's error over its norm (resolved at the refit:
  :mod:`gba_lens.saes.refit_error`).

Anywhere else they resolve to ``unit_mean``, ``False`` and ``absolute``: a component's output (``hook_mlp_out``,
``hook_attn_out``) is added to a residual stream whose norm its rows do not show, and stored or synthetic
activations may name no hook. On the synthetic models, whose features' magnitudes are drawn apart, dividing
each input by its norm and the offsets cost features, so neither is a default there.

Measured (docs/experiments/prior_free.md, fifty-sixth step; twelve seeds of the stdlib LM's preset, resid_pre):
with both, CE loss recovered / explained variance 0.0008 / 0.0068 above TopK's frontier at GBA's L0 and
0.0013 / 0.0056 above BatchTopK's, on every seed (unit-mean inputs without offsets: -0.00001 / +0.0018 and
+0.0005 / +0.0006). Dividing by the norm alone gains less CE and leaves the EV under BatchTopK's.

The hook is the SAE's ``cfg.metadata.hook_name``, which SAELens's runners set after building the SAE and before
building its trainer. So the options resolve at the first of: the config built with the hook in its metadata,
gba_lens's trainer built (before its optimiser, which must hold the offsets where they train), or the first
training step (SAELens's own trainer, whose optimiser then also holds offsets the run drops: they get no
gradient), or a state loaded into the SAE. The SAE's config then holds the resolved values, so a saved SAE and a
resumed run read them.
"""

from __future__ import annotations

import re
from typing import Any

RESIDUAL_HOOK = re.compile(r"(^|\.)hook_resid_(pre|mid|post)$|^blocks\.\d+\.(hook_in|hook_out|ln2\.hook_in)$")
"""The residual-stream hooks, which the next block's LayerNorm reads: HookedTransformer's names and a
TransformerBridge's canonical ones (``blocks.L.hook_in``, ``ln2.hook_in``, ``hook_out``)."""


def hook_name(cfg: Any) -> str | None:
    """The hook the config's SAE reads (``cfg.metadata.hook_name``), or None where it names none."""
    hook = getattr(getattr(cfg, "metadata", None), "hook_name", None)
    return hook if isinstance(hook, str) else None


def reads_through_layernorm(cfg: Any) -> bool:
    """Whether the SAE's hook is a residual-stream hook; False where none is named."""
    hook = hook_name(cfg)
    return hook is not None and RESIDUAL_HOOK.search(hook) is not None


def resolve_hook_options(cfg: Any, named_only: bool = False) -> bool:
    """Set ``cfg``'s unset ``input_norm`` and ``activation_bias`` from its hook, in place (see the module);
    ``named_only``: only if the config names its hook. Returns whether this call turned ``activation_bias``
    off (an SAE built before it holds offsets to drop)."""
    if named_only and hook_name(cfg) is None:
        return False
    residual = reads_through_layernorm(cfg) and cfg.trains_as_defaults()
    if cfg.input_norm is None:  # per_token rescales each input itself: not beside SAELens's own scaling
        own_scaling = cfg.normalize_activations == "none" and cfg.reshape_activations == "none"
        cfg.input_norm = "per_token" if residual and own_scaling else "unit_mean"
    if cfg.activation_bias is not None:
        return False
    cfg.activation_bias = residual and cfg.gating == "jumprelu"
    return not cfg.activation_bias


def settle_hook_options(sae: Any) -> None:
    """Resolve a GBA SAE's hook-dependent options (no-op for other SAEs and once resolved), dropping the
    learned offsets it built while ``activation_bias`` was unset where they resolve off."""
    cfg = getattr(sae, "cfg", None)
    if cfg is None or not hasattr(cfg, "activation_bias") or not hasattr(cfg, "input_norm"):
        return
    if resolve_hook_options(cfg):
        sae.b_act = None
