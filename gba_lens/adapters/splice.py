"""The computation spliced into a hook point: SAE reconstruction (+ optional error term).

An :class:`SAESplice` is installed as a permanent forward hook on the model's ``HookPoint``;
whatever it returns replaces the activation. It exposes the SAE's own hook points
(``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post``, ``hook_sae_recons``) plus
two it owns (``hook_sae_error``, ``hook_sae_output``), mirroring SAELens's ``_SAEWrapper``.
We do not reuse ``_SAEWrapper`` itself: it is a private class meant to *replace* the HookPoint
module (which the bridge's canonical/alias bookkeeping does not survive), and its error term is
computed under ``no_grad`` so no gradient reaches the error node.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import nn

from gba_lens.adapters.hooks import (
    HOOK_SAE_ERROR,
    HOOK_SAE_INPUT,
    HOOK_SAE_OUTPUT,
)
from gba_lens.compat import HookPoint

_IDENTITY = nn.Identity()


@contextmanager
def _sae_hooks_bypassed(sae: SAE[Any], hook_points: dict[str, HookPoint]) -> Iterator[None]:
    """Temporarily replace the SAE's hook points by identities (same idea as SAELens's
    private ``_disable_hooks``), so a second encode/decode ignores user hooks."""
    try:
        for name in hook_points:
            setattr(sae, name, _IDENTITY)
        yield
    finally:
        for name, hook_point in hook_points.items():
            setattr(sae, name, hook_point)


class SAESplice:
    """Replace one hook point's activation by an SAE's reconstruction.

    Args:
        sae: any ``sae_lens.SAE`` (standard, topk, jumprelu, ...). It is used, not copied or
            modified; its hook points become hook points of the model while attached.
        error_term: add ``error = x - SAE(x)`` back so the output equals the clean activation
            (up to floating-point rounding of ``recons + (x - recons)``).
        head_shape: ``(n_heads, d_head)`` when the activation is per-head (``attn.hook_z``) and
            the SAE takes the flattened ``n_heads * d_head`` vector without reshaping itself
            (``cfg.reshape_activations != "hook_z"``); None otherwise.

    Shapes: ``hook_sae_input`` / ``hook_sae_recons`` live in the SAE's space (flat
    ``[..., d_in]``; for ``hook_z`` heads are flattened, as in SAELens), ``hook_sae_acts_*`` are
    ``[..., d_sae]``, ``hook_sae_error`` / ``hook_sae_output`` have the hook's own shape.

    Gradients with ``error_term=True`` (autograd on): the SAE runs a second time with its hooks
    bypassed to get the clean reconstruction, and ``error = x - recons_clean`` keeps its graph.
    So the output's gradient reaches the feature activations only through the decoder, the
    error node gets exactly the output's gradient, and upstream of the splice the gradient is
    the clean model's (``d out / d x = J_sae + (I - J_sae) = I`` when no hook intervenes).
    Interventions on feature activations are *not* undone by the error term, because the error
    comes from the un-hooked pass. Without autograd and with no hooks on the SAE's hook points
    the second pass is skipped (identical result).
    """

    def __init__(
        self, sae: SAE[Any], error_term: bool, head_shape: tuple[int, int] | None = None
    ) -> None:
        self.sae = sae
        self.error_term = bool(error_term)
        self.head_shape = head_shape
        # The SAE's own top-level hook points, shared (like SAELens's wrapper does) so that the
        # hooks inside sae.encode / sae.decode fire as model hook points.
        self.sae_hook_points: dict[str, HookPoint] = {
            name: hp
            for name, hp in sae.hook_dict.items()
            if "." not in name and name not in (HOOK_SAE_ERROR, HOOK_SAE_OUTPUT)
        }
        self.hook_sae_error: HookPoint | None = HookPoint() if self.error_term else None
        self.hook_sae_output = HookPoint()

    @property
    def hook_points(self) -> dict[str, HookPoint]:
        """Suffix -> HookPoint for every hook point this splice exposes (input first)."""
        points = dict(sorted(self.sae_hook_points.items(), key=lambda kv: kv[0] != HOOK_SAE_INPUT))
        if self.hook_sae_error is not None:
            points[HOOK_SAE_ERROR] = self.hook_sae_error
        points[HOOK_SAE_OUTPUT] = self.hook_sae_output
        return points

    def _sae_device(self) -> torch.device | None:
        for param in self.sae.parameters():
            return param.device
        return None

    def _hooks_active(self) -> bool:
        return any(
            len(hp._forward_hooks) > 0 or len(hp._forward_pre_hooks) > 0
            for hp in self.sae_hook_points.values()
        )

    def _needs_grad(self, x: torch.Tensor) -> bool:
        if not torch.is_grad_enabled():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.sae.parameters())

    def reconstruct(
        self, x: Float[torch.Tensor, "... *feature"]
    ) -> Float[torch.Tensor, "... *feature"]:
        """SAE reconstruction of ``x`` in the hook's shape (runs the SAE's hook points)."""
        sae_in = x.flatten(-2) if self.head_shape is not None else x
        recons = self.sae.decode(self.sae.encode(sae_in))
        if self.head_shape is not None:
            recons = recons.unflatten(-1, self.head_shape)
        return recons

    def __call__(self, activation: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG002
        """Forward-hook body: return the tensor that replaces ``activation``."""
        sae_device = self._sae_device()
        if sae_device is not None and activation.device != sae_device:
            raise RuntimeError(
                f"SAE spliced at {getattr(hook, 'name', '?')!r} is on {sae_device} but the "
                f"activation is on {activation.device}; move it with `sae.to(...)` (the model "
                "was probably moved after attach())."
            )
        x = activation
        recons = self.reconstruct(x)
        if self.error_term:
            assert self.hook_sae_error is not None
            if self._needs_grad(x) or self._hooks_active():
                with _sae_hooks_bypassed(self.sae, self.sae_hook_points):
                    recons_clean = self.reconstruct(x)
            else:
                # Nothing can differ from the hooked pass and no gradient flows: reuse it.
                recons_clean = recons.detach()
            error = self.hook_sae_error(x.to(recons_clean.dtype) - recons_clean)
            out = recons + error
        else:
            out = recons
        return self.hook_sae_output(out.to(x.dtype))

    def __repr__(self) -> str:
        arch = type(self.sae).__name__
        return f"SAESplice({arch}, d_in={self.sae.cfg.d_in}, error_term={self.error_term})"


__all__ = ["SAESplice"]
