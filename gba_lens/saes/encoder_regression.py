"""Encoder regression: each neuron's pre-activation is also trained where its gate is closed.

GBA's gate passes gradient only on the inputs where a neuron fires, so its encoder never learns from
the occurrences of its feature it misses, nor from the inputs it should stay away from. With
``encoder_regression`` (a weight) the loss also has, on every input, the squared difference between
each neuron's pre-activation u_m = w_m . x and its leave-one-out coefficient

    c_m = z_m + d_m . r / |d_m|^2        (r = x - x_hat, in the space the encoder reads)

the coefficient of d_m that best reconstructs x once the other latents' reconstruction is removed.
c carries no gradient: the other latents explain away what they reconstruct, and u_m learns to
subtract it. The loss is

    weight * d_in / d_sae * sum_m (u_m - c_m)^2,  averaged over the batch

(d_in / d_sae puts a sum over latents on the scale of the reconstruction loss, a sum over d_in).
It needs every latent's pre-activation, so the training step stays dense. docs/experiments/prior_free.md
(fifteenth step) has what it changes.
"""

from __future__ import annotations

import torch
from jaxtyping import Float


def encoder_regression_loss(
    pre_activations: Float[torch.Tensor, "batch d_sae"],
    feature_acts: Float[torch.Tensor, "batch d_sae"],
    residual: Float[torch.Tensor, "batch d_in"],
    decoder: Float[torch.Tensor, "d_sae d_in"],
    weight: float,
) -> torch.Tensor:
    """The weighted regression of ``pre_activations`` (u, with gradient) on the leave-one-out
    coefficients computed from ``feature_acts``, ``residual`` and ``decoder`` (no gradient flows
    through them: they are read under ``no_grad``)."""
    with torch.no_grad():
        row_norms = (decoder * decoder).sum(1).clamp(min=1e-12)
        coefficient = feature_acts + (residual @ decoder.T) / row_norms
    d_sae, d_in = decoder.shape
    return weight * d_in / d_sae * (pre_activations - coefficient).pow(2).sum(-1).mean()
