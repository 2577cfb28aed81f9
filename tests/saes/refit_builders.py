"""An SAE and inputs for the decoder refit's tests (test_decoder_refit.py, test_sparse_refit.py)."""

from __future__ import annotations

import torch

from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig


def refit_sae(seed: int = 0, **options) -> tuple[GBATrainingSAE, torch.Tensor]:
    """A GBA SAE (8 inputs, 24 latents; ``options`` for its config) with thresholds that let about a third of
    its latents fire, and its 600 inputs."""
    torch.manual_seed(seed)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=24, n_groups=2, **options))
    x = torch.relu(torch.randn(600, 8)) * 3 + torch.rand(600, 1)
    sae.initialize_from_batch(x)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.3, -0.05)
        sae.b_dec.normal_(0, 0.05)
    return sae, x


def squared_error(sae: GBATrainingSAE, x: torch.Tensor) -> float:
    """|s x - b_pre - z W|^2 / |s x - b_pre|^2 with the SAE's own codes, written out."""
    sae.eval()
    with torch.no_grad():
        target = x.double() * float(sae.input_scale) - sae.b_dec.double()
        return float((target - sae.encode(x).double() @ sae.W_dec.double()).pow(2).sum() / target.pow(2).sum())
