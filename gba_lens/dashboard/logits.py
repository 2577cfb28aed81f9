"""Weight-based feature summaries: logit effects of decoder directions and nearest features.

Both are computed in chunks of features, so a 16k-wide SAE never materialises a
``[d_sae, d_vocab]`` or ``[d_sae, d_sae]`` matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import nn

__all__ = ["LogitEffects", "decoder_to_residual", "logit_effects", "nearest_features"]


@dataclass
class LogitEffects:
    """Top positive / negative logits of each feature's decoder direction through W_U."""

    top_ids: Int[torch.Tensor, "d_sae k"]
    top_values: Float[torch.Tensor, "d_sae k"]
    bottom_ids: Int[torch.Tensor, "d_sae k"]
    bottom_values: Float[torch.Tensor, "d_sae k"]


def _layer_of(hook: str) -> int | None:
    match = re.match(r"blocks\.(\d+)\.", hook)
    return int(match.group(1)) if match else None


def decoder_to_residual(
    model: nn.Module, hook: str, w_dec: Float[torch.Tensor, "d_sae d_in"]
) -> Float[torch.Tensor, "d_sae d_model"] | None:
    """Decoder rows written into the residual stream, or None when the hook's space has no
    linear map there that this knows of.

    Residual, ``hook_attn_out`` and ``hook_mlp_out`` hooks are already d_model wide;
    ``attn.hook_z`` goes through the layer's ``W_O``; ``mlp.hook_post`` through ``W_out``.
    """
    d_model = int(model.cfg.d_model)
    layer = _layer_of(hook)
    try:
        if hook.endswith("attn.hook_z") and layer is not None:
            w_o = model.blocks[layer].attn.W_O.detach()  # [n_heads, d_head, d_model]
            n_heads, d_head, _ = w_o.shape
            if w_dec.shape[1] == n_heads * d_head:
                return torch.einsum("fhd,hdm->fm", w_dec.view(-1, n_heads, d_head).to(w_o), w_o)
        if hook.endswith(("mlp.hook_post", "mlp.hook_pre")) and layer is not None:
            w_out = model.blocks[layer].mlp.W_out.detach()  # [d_mlp, d_model]
            if w_dec.shape[1] == w_out.shape[0] and hook.endswith("hook_post"):
                return w_dec.to(w_out) @ w_out
    except (AttributeError, IndexError, TypeError):
        return None
    if w_dec.shape[1] == d_model and not hook.endswith(("hook_pre", "attn.hook_z")):
        return w_dec
    return None


def _unembed(model: nn.Module) -> torch.Tensor | None:
    w_u = getattr(model, "W_U", None)
    if w_u is None:
        unembed = getattr(model, "unembed", None)
        w_u = getattr(unembed, "W_U", None)
    return w_u.detach() if isinstance(w_u, torch.Tensor) else None


@torch.no_grad()
def logit_effects(
    model: nn.Module, hook: str, sae: Any, k: int = 10, chunk: int = 1024
) -> LogitEffects | None:
    """Top-k and bottom-k entries of ``W_dec[f] @ W_U`` for every feature (None if the hook's
    space cannot be mapped to the residual stream, or the model has no ``W_U``)."""
    w_u = _unembed(model)
    if w_u is None:
        return None
    w_dec = sae.W_dec.detach()
    resid = decoder_to_residual(model, hook, w_dec)
    if resid is None:
        return None
    k = min(k, w_u.shape[1])
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, resid.shape[0], chunk):
        logits = resid[start : start + chunk].to(w_u) @ w_u
        top = logits.topk(k, dim=1)
        bottom = logits.topk(k, dim=1, largest=False)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
    cat = [torch.cat([p[i] for p in parts]).cpu() for i in range(4)]
    return LogitEffects(cat[0], cat[1].float(), cat[2], cat[3].float())


@torch.no_grad()
def nearest_features(
    w_dec: Float[torch.Tensor, "d_sae d_in"], k: int = 8, chunk: int = 1024
) -> tuple[Int[torch.Tensor, "d_sae k"], Float[torch.Tensor, "d_sae k"]]:
    """For each feature the k other features with the highest decoder cosine similarity."""
    w = w_dec.detach().float()
    unit = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
    d_sae = unit.shape[0]
    k = min(k, d_sae - 1)
    ids, sims = [], []
    for start in range(0, d_sae, chunk):
        block = unit[start : start + chunk] @ unit.T  # [chunk, d_sae]
        rows = torch.arange(start, start + block.shape[0], device=block.device)
        block[torch.arange(block.shape[0], device=block.device), rows] = -torch.inf
        top = block.topk(k, dim=1)
        ids.append(top.indices.cpu())
        sims.append(top.values.cpu())
    return torch.cat(ids), torch.cat(sims)
