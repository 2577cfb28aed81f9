"""GBA's ``encoder_regression`` option: the auxiliary loss, the gradient it gives silent neurons,
and what it refuses."""

import pytest
import torch

from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig


def _sae(weight: float, **options) -> GBATrainingSAE:
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=24, n_groups=2, encoder_regression=weight, **options))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 24)[:, None])  # decoder rows of different norms
        sae.b_enc.fill_(-0.3)                                  # some neurons silent on some inputs
    return sae


def test_the_loss_is_the_weighted_regression_on_the_leave_one_out_coefficient(step_input):
    sae = _sae(0.5)
    x = torch.randn(32, 8) * 2 + 0.5
    bias = sae.b_enc.detach().clone()  # the step's bias rule moves b after the loss is computed
    out = sae.training_forward_pass(step_input(x))
    # recompute from the definition, latent by latent: c_m = argmin_a |x_p - (x_hat_p - z_m d_m) - a d_m|^2
    x_p = sae.process_sae_in(x).detach()
    u = (out.hidden_pre - bias).detach()
    z = out.feature_acts.detach()
    d = sae.W_dec.detach()
    x_hat_p = sae.process_sae_in(out.sae_out).detach()  # the reconstruction as the encoder reads it
    total = torch.zeros(())
    for m in range(24):
        without_m = x_hat_p - z[:, m:m + 1] * d[m]
        c_m = ((x_p - without_m) @ d[m]) / (d[m] @ d[m])
        total = total + ((u[:, m] - c_m) ** 2).mean()
    expected = 0.5 * 8 / 24 * total
    assert out.losses["encoder_regression"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert out.loss.item() == pytest.approx((out.losses["mse_loss"] + out.losses["encoder_regression"]).item(), rel=1e-6)


def test_a_silent_neuron_gets_an_encoder_gradient_only_with_the_option(step_input):
    x = torch.randn(64, 8) * 2 + 0.5
    grads = {}
    for weight in (0.0, 0.1):
        sae = _sae(weight)
        with torch.no_grad():
            sae.b_enc[0] = -1.0  # neuron 0 fires on none of these inputs
        out = sae.training_forward_pass(step_input(x))
        assert (out.feature_acts[:, 0] == 0).all()
        out.loss.backward()
        grads[weight] = sae.W_enc.grad[:, 0].abs().sum().item()
        assert ("encoder_regression" in out.losses) == (weight > 0)
    assert grads[0.0] == 0.0
    assert grads[0.1] > 0.0


def test_the_option_keeps_the_step_dense_and_is_validated():
    assert _sae(0.1, sparse_step="auto").sparse_step_policy.mode == "off"
    assert _sae(0.0, sparse_step="auto").sparse_step_policy.mode == "auto"
    with pytest.raises(ValueError, match="encoder_regression needs every latent"):
        GBATrainingSAEConfig(d_in=8, d_sae=24, encoder_regression=0.1, sparse_step="on")
    with pytest.raises(ValueError, match="encoder_regression needs normalize_activations='none'"):
        GBATrainingSAEConfig(d_in=8, d_sae=24, encoder_regression=0.1, normalize_activations="layer_norm")
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="encoder_regression must be a finite number >= 0"):
            GBATrainingSAEConfig(d_in=8, d_sae=24, encoder_regression=bad)
