"""Fixtures of the circuit tests: a tiny model with two random SAEs, and the IOI model with GBA SAEs."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from gba_lens.circuits import logit_diff_metric

from circuit_builders import BATCH, D_MODEL, D_VOCAB, HOOK_Z, RESID, SAE_SEED, SEQ, random_sae

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def tiny():
    cfg = HookedTransformerConfig(n_layers=2, d_model=D_MODEL, n_ctx=16, d_head=8, n_heads=4, d_mlp=128,
                                  d_vocab=D_VOCAB, act_fn="gelu", normalization_type="LN", seed=0)
    model = HookedTransformer(cfg).eval()
    saes = {RESID: random_sae(D_MODEL, 64, RESID, 1), HOOK_Z: random_sae(32, 64, HOOK_Z, 2, reshape="hook_z")}
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, D_VOCAB, (BATCH, SEQ), generator=gen)
    corrupt = clean.clone()
    corrupt[:, 3] = torch.randint(0, D_VOCAB, (BATCH,), generator=gen)
    metric = logit_diff_metric(torch.tensor([[1, 2]] * BATCH))
    with torch.no_grad():
        ref_logits = model(clean)
    return model, saes, clean, corrupt, metric, ref_logits


@pytest.fixture(scope="session")
def ioi():
    """The offline IOI model with small GBA SAEs trained here (a few seconds), from random starts: the
    attribution test's zero-ablation bars describe such SAEs early in training. GBA's default data
    starts after 300 steps read like random starts trained four times longer, where ten random active
    features matter more and the bars fail at most seeds while AtP still agrees with exact patching
    (docs/experiments/prior_free.md, thirty-second and thirty-third steps; ``ioi_default_saes``). They
    train every weight at one learning rate, as when the bars were set: the encoder's faster rate late
    in a run (``encoder_lr_scale``, thirty-eighth step) reads like more training too."""
    from gba_lens.experiments.ioi_attribution import train_ioi_saes
    from gba_lens.models.ioi_model import ioi_heldout_prompts, load_ioi_model

    model = load_ioi_model()
    saes = train_ioi_saes(model, SAE_SEED, encoder_init="random", encoder_lr_scale=1.0)
    prompts = ioi_heldout_prompts(model, "pairs", n_prompts=64, seed=2)
    return model, saes, prompts


@pytest.fixture(scope="session")
def ioi_default_saes(ioi):
    """The IOI fixture's model and prompts with SAEs at GBA's defaults (data starts)."""
    from gba_lens.experiments.ioi_attribution import train_ioi_saes

    model, _, prompts = ioi
    return model, train_ioi_saes(model, SAE_SEED), prompts
