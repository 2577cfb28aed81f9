"""The replicated-run engine: ``R`` edited copies of a batch in one forward pass.

Row ``r * batch + b`` of the replicated batch is prompt ``b`` of replicate ``r``; a
:class:`NodeEdit` replaces node values in some replicates, and :func:`run_replicated` evaluates
the metric per replicate. Ablation sweeps, exact patching and integrated gradients are built on
this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gba_lens.circuits.forward import logits_of, scalar_metric, temporary_hooks
from gba_lens.circuits.types import HookFn, Metric

__all__ = ["DEFAULT_MAX_TOKENS", "NodeEdit", "replicates_per_pass", "run_replicated"]

# Default number of token positions per batched forward pass of the replicated runner (bounds the
# size of the logits tensor: 2,048 positions x 50,257 GPT-2 logits x 4 bytes = 0.4 GB).
DEFAULT_MAX_TOKENS = 2048


@dataclass
class NodeEdit:
    """Replace some node values in some replicates of a replicated batch.

    Entry ``k`` edits replicate ``rep[k]``: for feature edits (``feature`` given) the activation of
    feature ``feature[k]`` at the positions ``mask[k]`` (``[batch, pos]``; ``mask`` may have a
    leading 1 to share) becomes ``values[k]`` (``[batch, pos]``); for error edits
    (``feature=None``) the whole error vector at those positions becomes ``values[k]``
    (``[batch, pos, *error_shape]``). Pairs ``(rep, feature)`` must be distinct.
    """

    name: str  # full hook name (f"{hook}.hook_sae_acts_post" or f"{hook}.hook_sae_error")
    rep: torch.Tensor  # [K] long
    feature: torch.Tensor | None  # [K] long, or None for error edits
    mask: torch.Tensor  # [K or 1, batch, pos] bool
    values: torch.Tensor  # [K or 1, batch, pos] (features) / [K or 1, batch, pos, *err] (error)

    def apply(self, act: torch.Tensor, n_rep: int) -> torch.Tensor:
        rb = act.shape[0]
        if rb % n_rep:
            raise RuntimeError(f"Activation batch {rb} is not a multiple of {n_rep} replicates.")
        view = act.view(n_rep, rb // n_rep, *act.shape[1:])
        rep = self.rep.to(act.device)
        out = view.clone()
        if self.feature is not None:
            feat = self.feature.to(act.device)
            current = view[rep, :, :, feat]  # [K, batch, pos]
            new = torch.where(self.mask.to(act.device), self.values.to(act.dtype).to(act.device), current)
            out[rep, :, :, feat] = new
        else:
            current = view[rep]  # [K, batch, pos, *err]
            mask = self.mask.to(act.device)
            mask = mask.reshape(*mask.shape, *([1] * (current.ndim - 3)))
            out[rep] = torch.where(mask, self.values.to(act.dtype).to(act.device), current)
        return out.view_as(act)


def run_replicated(
    model: nn.Module,
    tokens: torch.Tensor,
    n_rep: int,
    edits: Sequence[NodeEdit],
    metric: Metric,
) -> torch.Tensor:
    """Run ``n_rep`` copies of ``tokens`` (edited by ``edits``) in one forward pass, no grad.

    Returns the metric of each replicate (``[n_rep]``, float32, on CPU).
    """
    by_name: dict[str, list[NodeEdit]] = {}
    for e in edits:
        by_name.setdefault(e.name, []).append(e)

    def make(group: list[NodeEdit]) -> HookFn:
        def hook(t: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG001
            for e in group:
                t = e.apply(t, n_rep)
            return t

        return hook

    batch = tokens.shape[0]
    with torch.no_grad(), temporary_hooks(model, [(n, make(g)) for n, g in by_name.items()]):
        logits = logits_of(model(tokens.repeat(n_rep, 1)))
    return torch.stack(
        [scalar_metric(metric, logits[r * batch : (r + 1) * batch]) for r in range(n_rep)]
    ).float().cpu()


def replicates_per_pass(tokens: torch.Tensor, batch_size: int | None, max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """How many replicates of ``tokens`` to run per forward pass."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        return int(batch_size)
    return max(1, max_tokens // max(1, tokens.numel()))

