"""A trained GBA SAE's weights as a plain SAELens SAE's (``save_inference_model``, ``to_inference_sae``).

The GBA neuron fires iff u = w . (s x - b_pre) > -b and then outputs u (JumpReLU gate; with
``activation_bias`` u + max(c, b)) or u + b (ReLU gate). SAELens's ``JumpReLUSAE`` fires iff
W_enc x' + b_enc > threshold and outputs relu(W_enc x' + b_enc), x' = x - b_dec; its
``StandardSAE`` outputs relu(W_enc x' + b_enc). So, with the input scale s folded into the
weights (W_enc s, W_dec / s, b_dec / s: the same u from the raw input; with ``input_norm="per_token"``
s / sqrt(d_in), since SAELens's ``constant_norm_rescale`` scales each input to norm sqrt(d_in)):

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


def to_inference_state_dict(state_dict: dict[str, Any], gating: str, input_norm: str) -> None:
    """Turn a GBA SAE's state dict (after SAELens's own processing), in place, into the weights of
    SAELens's ``JumpReLUSAE`` (``gating="jumprelu"``) or ``StandardSAE`` (``"relu"``); with
    ``input_norm="per_token"`` for SAELens's ``normalize_activations="constant_norm_rescale"``."""
    for key in [k for k in state_dict if k.startswith(TRAINING_STATE_PREFIXES)]:
        del state_dict[key]
    state_dict.pop("step_density", None)
    scale = state_dict.pop("input_scale")
    if input_norm != "none" and scale > 0:
        s = scale.to(state_dict["W_enc"].dtype)
        if input_norm == "per_token":  # SAELens scales each input to norm sqrt(d_in), GBA to 1
            s = s / state_dict["W_enc"].shape[0] ** 0.5
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


def inference_state_dict(sae: Any) -> dict[str, Any]:
    """A copy of a GBA SAE's weights as its SAELens inference SAE's (``to_inference_sae``)."""
    state_dict = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    sae.process_state_dict_for_saving_inference(state_dict)
    return state_dict


def inference_config(sae: Any) -> dict[str, Any]:
    """SAELens's inference config of a GBA SAE, its metadata's ``training_architecture_details``
    completed by the group targets at the end of training (``group_targets``): with ``target_l0`` or
    targets that move (``adaptive``, ``valleys``) they are not the HTF ... LTF of the config; 0 for a
    group whose neurons all joined other groups (``idle_groups``)."""
    cfg_dict = sae.cfg.get_inference_sae_cfg_dict()
    if sae.cfg.input_norm == "per_token":
        cfg_dict["normalize_activations"] = "constant_norm_rescale"  # the weights carry sqrt(d_in)
    details = cfg_dict["metadata"]["training_architecture_details"]
    details["group_targets"] = [float(t) for t in sae.bias_adaptation.group_targets.tolist()]
    return cfg_dict
