"""GBA as a SAELens architecture (``"gba"``): what SAELens needs to build and load it.

* Its training registry: SAELens's runners build a GBA SAE from ``GBATrainingSAEConfig``.
* Its SAE registry: ``SAE.load_from_disk`` and ``TrainingSAE.load_from_disk`` read a folder written by
  ``save_model`` (a SAELens checkpoint of a GBA run, or a runner's ``from_pretrained_path``) as the GBA SAE,
  training state included. ``save_inference_model`` writes a plain SAELens SAE instead, which loads
  without gba_lens.
* SAELens's ``load_from_disk`` casts every saved tensor to the config's dtype, then builds the SAE on the
  "meta" device and assigns the tensors to it. The SAE's integer and boolean state (the neurons' groups,
  ``idle_groups``' phase) would be assigned as floats: :func:`own_dtypes` casts them back (exact: each is
  far under 2^24). Buffers a state dict leaves out (``persistent=False``: a check's sums, rewritten at every
  check) would stay on "meta", and the SAE could not be moved or run: :func:`make_unsaved_buffers` makes
  them again.
* The learned output offsets (``b_act``) exist where ``activation_bias`` is on, or where it is unset until the
  SAE's hook decides it (:mod:`gba_lens.saes.hook_defaults`), and wherever the decoder refit fitted them:
  :func:`match_offsets` settles the option and makes the offsets a state dict brings.
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import register_sae_class, register_sae_training_class
from torch import nn

from gba_lens.compat import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from gba_lens.saes.hook_defaults import settle_hook_options

ARCHITECTURE = "gba"


def register(sae_class: type[Any], config_class: type[Any]) -> None:
    """Register ``"gba"`` with SAELens's training and SAE registries (idempotent)."""
    if ARCHITECTURE not in SAE_TRAINING_CLASS_REGISTRY:
        register_sae_training_class(ARCHITECTURE, sae_class, config_class)
    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, sae_class, config_class)


def own_dtypes(sae: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with each tensor in the dtype of the SAE's own tensor of that name."""
    own = sae.state_dict(keep_vars=True)
    return {name: value.to(own[name].dtype) if name in own and value.dtype != own[name].dtype else value
            for name, value in state_dict.items()}


def match_offsets(sae: Any, state_dict: dict[str, torch.Tensor]) -> None:
    """Before ``load_state_dict``: the options that follow the hook resolved (a loaded state fixes the SAE's
    parameters, as a trainer does), and offsets the state brings but the SAE lacks (fitted by the decoder refit)
    made, frozen, for it to fill."""
    settle_hook_options(sae)
    if sae.b_act is None and "b_act" in state_dict:
        sae.b_act = nn.Parameter(torch.zeros_like(sae.b_enc), requires_grad=False)


def make_unsaved_buffers(sae: nn.Module) -> None:
    """After ``load_state_dict``: every unsaved buffer still on "meta" is made again, zeros of its shape
    and dtype on the device of the SAE's loaded parameters. Zeros are what those buffers start at;
    each is written before it is read."""
    device = next(sae.parameters()).device
    for module in sae.modules():
        for name in module._non_persistent_buffers_set:
            buffer = module._buffers.get(name)
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype, device=device)
