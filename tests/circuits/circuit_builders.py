"""Shared builders of the circuit tests: a tiny model's hook names and sizes, and random SAEs."""

from __future__ import annotations

import os

import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

SAE_SEED = int(os.environ.get("GBA_LENS_TEST_SAE_SEED", "0"))  # to check robustness across seeds
RESID = "blocks.1.hook_resid_pre"
HOOK_Z = "blocks.0.attn.hook_z"
D_MODEL, D_VOCAB, BATCH, SEQ = 32, 50, 4, 10


def random_sae(d_in: int, d_sae: int, hook: str, seed: int, reshape: str = "none") -> StandardSAE:
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
