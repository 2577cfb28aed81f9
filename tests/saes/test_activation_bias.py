"""``activation_bias``: each latent's learned offset to what it outputs when it fires.

Off by default except at residual-stream hooks (tests/saes/test_hook_defaults.py) and refused with the ReLU
gate; exported exactly as SAELens's JumpReLU SAE; trained by gradient to the least-squares offset of the
latents' outputs given their gates, which is negative where latents that fire together leak into each
other's pre-activations."""

from __future__ import annotations

import pytest
import torch

from gba_lens.compat import SAEMetadata
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.gba_options import OPTIONS_ADDED_LATER
from gba_lens.training.data import SeededBatches
from gba_lens.training.train import TrainConfig, train_sae


def test_off_by_default_on_when_asked_and_refused_with_the_relu_gate():
    off = GBATrainingSAEConfig(d_in=8, d_sae=20, n_groups=2, metadata=SAEMetadata(hook_name="blocks.0.hook_mlp_out"))
    assert GBATrainingSAE(off).b_act is None
    assert OPTIONS_ADDED_LATER["activation_bias"] is False  # runs recorded before the option resume as they were
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=20, n_groups=2, activation_bias=True))
    assert sae.b_act.requires_grad and torch.equal(sae.b_act, torch.zeros(20))
    assert "b_act" in sae.state_dict()  # checkpoints carry it
    with pytest.raises(ValueError, match="activation_bias offsets the JumpReLU gate"):
        GBATrainingSAEConfig(d_in=8, d_sae=20, n_groups=2, gating="relu", activation_bias=True)


def test_the_exported_sae_is_exactly_the_trained_one_with_offsets_on_both_sides_of_the_bias():
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=16, d_sae=64, n_groups=4, activation_bias=True))
    x = torch.randn(300, 16) * 2 + 1
    sae.initialize_from_batch(x)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.6, -0.1)
        sae.b_act.uniform_(-0.8, 0.2)  # some under their bias (the offset is then b), some over it
    assert (sae.b_act < sae.b_enc).any() and (sae.b_act > sae.b_enc).any()
    sae.eval()
    with torch.no_grad():
        z, y = sae.encode_with_hidden_pre(x)
        inference = sae.to_inference_sae()
        z_plain = inference.encode(x)
        assert type(inference).__name__ == "JumpReLUSAE"
        assert (inference.threshold >= 0).all()
        assert torch.equal(z != 0, y > 0)  # every open gate outputs something positive: L0 counts the gates
        assert (z >= 0).all()
        assert torch.allclose(z_plain, z, atol=1e-5)
        assert torch.allclose(inference.decode(z_plain), sae.decode(z), atol=1e-4)
        # the offset moved the outputs: not the SAE without it
        without = z - sae.activation_offset() * (y > 0)
        assert (without - z).abs().max() > 0.05


def test_the_offsets_train_to_the_least_squares_offset_of_the_outputs_given_the_gates():
    """Two latents on two features at cosine 0.3, encoder and decoder fixed at the features:
    where both fire, each one's u carries 0.3 of the other's coefficient, which the other latent
    reconstructs too. Trained with everything else frozen, the offsets reach the least-squares
    offsets for the fixed gates, negative, and lower the error."""
    v = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.3, 0.1 * 91**0.5, 0.0, 0.0]])

    def sample(n: int) -> torch.Tensor:
        active = (torch.rand(n, 2) < 0.5).float()
        coefficients = active * (1 + torch.rand(n, 2))
        return coefficients @ v + 0.05 * torch.randn(n, 4)

    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=4, d_sae=2, n_groups=1, find_l0=False, activation_bias=True,
                                              input_norm="none", centre_inputs=False, learn_pre_bias=False,
                                              highest_target=0.9, lowest_target=0.9))
    with torch.no_grad():
        sae.W_enc.copy_(v.t())
        sae.W_dec.copy_(v)
        sae.b_enc.fill_(-0.5)
    for name in ("W_enc", "W_dec"):
        getattr(sae, name).requires_grad_(False)
    sae.bias_adaptation.gamma_minus = sae.bias_adaptation.gamma_plus = 0.0  # thresholds held where they are
    train_sae(sae, SeededBatches(sample, 512, seed=0), TrainConfig(total_samples=512 * 400, batch_size=512, lr=1e-2))

    torch.manual_seed(1)
    x = sample(20_000)
    with torch.no_grad():
        u = x @ v.t()
        gate = (u > 0.5).float()
        residual = x - (u * gate) @ v  # what the outputs u leave
        columns = gate[:, :, None] * v[None]  # [n, latent, d]: what one unit of each offset adds
        best = torch.linalg.lstsq(columns.permute(0, 2, 1).reshape(-1, 2), residual.reshape(-1, 1)).solution[:, 0]

        def error(offset: torch.Tensor) -> float:
            return ((x - ((u + offset) * gate) @ v) ** 2).sum(-1).mean().item()

    assert torch.equal(sae.b_enc, torch.full((2,), -0.5))
    assert (best < -0.2).all() and (best > -0.5).all()  # the leak is double-counted: the best outputs are below u
    assert torch.allclose(sae.b_act.detach(), best, atol=0.02)
    assert error(sae.b_act.detach()) < 0.5 * error(torch.zeros(2))  # 0.07 against 0.19
