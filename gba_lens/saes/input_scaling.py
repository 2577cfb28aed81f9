"""What GBA's encoder does to an input before its directions read it (``input_norm``).

GBA's bias range [-1, 0] only means something when pre-activations are O(1), so the SAE scales its
inputs itself (SAELens's ``expected_average_only_in`` scales to norm sqrt(d_in), where every bias
would sit at the clamp at -1):

* ``unit_mean`` (the default except at residual-stream hooks: :mod:`gba_lens.saes.hook_defaults`): s x - b_pre,
  with s and b_pre set on the first training batch so that the inputs have unit mean norm (b_pre its mean with
  ``centre_inputs``, else 0).
* ``per_token`` (the default at residual-stream hooks, which a LayerNorm reads): each input is first divided by
  its own norm, then scaled and centred as ``unit_mean``: s x / |x| - b_pre. The code no longer depends on an
  input's scale (a token twice as long fires the same latents twice as strongly), and the reconstruction is
  scaled back by |x|. A threshold then reads a latent's share of the input rather than its size, so a low-norm
  input fires as many latents as a high-norm one with the same content (as TopK's k does). Exported as SAELens's
  ``normalize_activations="constant_norm_rescale"`` (inputs scaled to norm sqrt(d_in)), with sqrt(d_in) folded
  into the weights. On the stdlib LM it brings GBA's CE loss recovered to TopK's frontier on both hooks; on data
  whose features' magnitudes are independent of each other (the paper's toy, the Zipf models) it loses most
  features, because an input's share of a feature then varies with the other features present
  (docs/experiments/prior_free.md, fortieth step).
* ``none``: the inputs as they are.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

INPUT_NORMS = ("unit_mean", "per_token", "none")
TINY_NORM = 1e-12
"""Inputs of smaller norm are divided by this instead (``per_token``): an all-zero input stays zero."""


def per_token_factor(x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... 1"]:
    """1 / |x| of each input (``per_token``)."""
    return x.detach().norm(dim=-1, keepdim=True).clamp(min=TINY_NORM).reciprocal()


def undo_per_token(reconstruction: Float[torch.Tensor, "... d_in"], factor: Float[torch.Tensor, "... 1"] | None
                   ) -> Float[torch.Tensor, "... d_in"]:
    """``reconstruction`` times each input's norm (``per_token``): the codes decoded must be those of
    the inputs last encoded, whose norms ``factor`` holds (1 / |x|)."""
    if factor is None or factor.shape[:-1] != reconstruction.shape[:-1]:
        last = "no inputs" if factor is None else f"inputs of shape {tuple(factor.shape[:-1])}"
        raise ValueError(f"input_norm='per_token' scales each reconstruction by its input's norm: decode the codes of "
                         f"the inputs last encoded (codes of shape {tuple(reconstruction.shape[:-1])}, {last} encoded)")
    return reconstruction / factor


@torch.no_grad()
def first_batch_scaling(batch: Float[torch.Tensor, "... d_in"], centre: bool, per_token: bool
                        ) -> tuple[float, Float[torch.Tensor, " d_in"], Float[torch.Tensor, "rows d_in"]]:
    """``(s, b_pre, inputs)`` from the first training batch: s so that the (per-token normalised)
    inputs, centred on b_pre (their mean with ``centre``, else 0), have unit mean norm, and those
    inputs (s x - b_pre, for a data start)."""
    x = batch.detach().to(torch.float32).reshape(-1, batch.shape[-1])
    if x.shape[0] == 0:
        raise ValueError("cannot initialise the GBA input scale from an empty batch")
    if not torch.isfinite(x).all():
        raise ValueError("the first training batch contains NaN or inf activations")
    if per_token:
        x = x * per_token_factor(x)
    centre = centre and x.shape[0] > 1
    mean = x.mean(0) if centre else torch.zeros_like(x[0])
    norm = (x - mean).norm(dim=-1).mean()
    if centre and norm <= 0:  # every row equal: fall back to the raw norm
        mean = torch.zeros_like(mean)
        norm = x.norm(dim=-1).mean()
    scale = float(1.0 / norm.clamp(min=TINY_NORM))
    return scale, mean * scale, (x - mean) * scale
