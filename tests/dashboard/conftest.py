"""Tiny models and SAEs for the dashboard tests."""

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=40, act_fn="relu"
    )
    return HookedTransformer(cfg).eval()


@pytest.fixture()
def tiny_sae():
    torch.manual_seed(1)
    sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=24))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.5)
        sae.b_enc.normal_(-0.3, 0.3)
    return sae


@pytest.fixture(scope="session")
def tiny_tokens():
    return torch.randint(0, 40, (20, 12), generator=torch.Generator().manual_seed(2))
