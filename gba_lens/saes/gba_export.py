"""A trained GBA SAE's weights as a plain SAELens SAE's (``save_inference_model``, ``to_inference_sae``).

The GBA neuron fires iff u = w . (s x - b_pre) > -b and then outputs u (JumpReLU gate; with
``activation_bias`` u + max(c, b)) or u + b (ReLU gate). SAELens's ``JumpReLUSAE`` fires iff
W_enc x' + b_enc > threshold and outputs relu(W_enc x' + b_enc), x' = x - b_dec; its
``StandardSAE`` outputs relu(W_enc x' + b_enc). So, with the input scale s folded into the
weights (W_enc s, W_dec / s, b_dec / s: the same u from the raw input):

* JumpReLU: b_enc = the offset (0, or max(c, b)) and threshold = offset - b >= 0, under which
  the output u + offset > 0 wherever the neuron fires;
* ReLU: b_enc = b.

The controller's statistics (bias adaptation, valley histograms, the step's density) are training
state and are dropped.
"""

from __future__ import annotations

from typing import Any

import torch

def firing_offset(offset: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """What a firing latent adds to u with ``activation_bias``: max(c, b), so that its output
    u + max(c, b) > 0 wherever it fires (u > -b) and the SAE is exactly SAELens's JumpReLU."""
    return torch.maximum(offset, bias)


TRAINING_STATE_PREFIXES = ("bias_adaptation.", "valley_thresholds.")
"""State-dict entries of the bias controller and the valley histograms (not part of an inference SAE)."""


def to_inference_state_dict(state_dict: dict[str, Any], gating: str, unit_mean_inputs: bool) -> None:
    """Turn a GBA SAE's state dict (after SAELens's own processing), in place, into the weights of
    SAELens's ``JumpReLUSAE`` (``gating="jumprelu"``) or ``StandardSAE`` (``"relu"``)."""
    for key in [k for k in state_dict if k.startswith(TRAINING_STATE_PREFIXES)]:
        del state_dict[key]
    state_dict.pop("step_density", None)
    scale = state_dict.pop("input_scale")
    if unit_mean_inputs and scale > 0:
        s = scale.to(state_dict["W_enc"].dtype)
        state_dict["W_enc"] = state_dict["W_enc"] * s
        state_dict["W_dec"] = state_dict["W_dec"] / s
        state_dict["b_dec"] = state_dict["b_dec"] / s
    if gating == "jumprelu":
        bias, offset = state_dict["b_enc"], state_dict.pop("b_act", None)
        offset = torch.zeros_like(bias) if offset is None else firing_offset(offset, bias)
        state_dict["threshold"] = (offset - bias).clamp(min=0)
        state_dict["b_enc"] = offset
    for key in list(state_dict):
        state_dict[key] = state_dict[key].contiguous()
