"""Build GBA and the baseline SAEs by method name (all SAELens training classes).

The baselines are SAELens's own training SAEs (TopK, BatchTopK, L1 "standard", JumpReLU), so
GBA is compared against the implementations people actually use, trained in the same harness.
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import (
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens import TrainingSAE

from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.training.device import resolve_device

METHODS = ("gba", "ba", "topk", "batchtopk", "l1", "jumprelu")


def build_sae(method: str, d_in: int, d_sae: int, device: str = "cpu", zero_pre_bias: bool = False,
              **params: Any) -> TrainingSAE[Any]:
    """A fresh training SAE. ``params`` go to the method's SAELens config class.

    - ``gba``: :class:`GBATrainingSAEConfig` fields (n_groups, highest_target, ...).
    - ``ba``: single-group GBA; ``target`` sets the one target frequency.
    - ``topk`` / ``batchtopk``: ``k``.  ``l1``: ``l1_coefficient``.  ``jumprelu``: ``l0_coefficient``.

    ``device``: a torch device, or ``auto`` (see :func:`~gba_lens.training.device.resolve_device`).

    ``zero_pre_bias``: no pre-bias, for data with no offset (the paper's X = H V): b_dec (b_pre)
    is fixed at 0 for every method, so GBA neither centres its inputs nor trains b_pre, and the
    SAELens baselines keep their zero-initialised b_dec out of training.
    """
    # GBA sets b_pre itself on its first batch, so it is told through its config (which checkpoints
    # and exports carry); SAELens's classes start b_dec at 0 and only need it kept out of training.
    is_gba = method in ("gba", "ba")
    if zero_pre_bias and is_gba:
        params = {**params, "centre_inputs": False, "learn_pre_bias": False}
    sae = _build(method, {"d_in": d_in, "d_sae": d_sae, "device": resolve_device(device)}, dict(params))
    if zero_pre_bias and not is_gba:
        with torch.no_grad():
            sae.b_dec.zero_()
        sae.b_dec.requires_grad_(False)  # Adam skips a parameter that gets no gradient
    return sae


def _build(method: str, common: dict[str, Any], params: dict[str, Any]) -> TrainingSAE[Any]:
    if method == "gba":
        return GBATrainingSAE(GBATrainingSAEConfig(**common, **params))
    if method == "ba":
        target = float(params.pop("target", 0.1))
        return GBATrainingSAE(
            GBATrainingSAEConfig(**common, n_groups=1, highest_target=target, lowest_target=target, **params)
        )
    if method == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(**common, **params))
    if method == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common, **params))
    if method == "l1":
        return StandardTrainingSAE(StandardTrainingSAEConfig(**common, **params))
    if method == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(**common, **params))
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
