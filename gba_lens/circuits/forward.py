"""Forward passes with temporary hooks, and the metric and logits of a forward pass.

* :func:`temporary_hooks` - add forward hooks to named hook points and always remove them;
* :func:`capture` - one forward pass recording hook points (optionally keeping the graph);
* :func:`logits_of` / :func:`scalar_metric` - the logits of a model output, a metric as a 0-d tensor.

Everything works through what ``HookedTransformer``, ``HookedSAETransformer`` and
``TransformerBridge`` share (``hook_dict``, ``HookPoint.add_hook``, ``model(tokens)``), like
:mod:`gba_lens.adapters`. Hooks are added through :func:`gba_lens.adapters.hooks.add_lens_hook`
(not ``run_with_hooks``) because steering has to run *before* the SAE splice at a hook point
(``prepend=True``), which ``run_with_hooks`` cannot do, and because
``TransformerBridge.run_with_hooks`` silently ignores unknown names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from gba_lens.adapters.hooks import add_lens_hook, get_hook_dict, remove_lens_hook, unknown_hook_message
from gba_lens.circuits.types import HookFn, Metric

__all__ = ["capture", "logits_of", "replace_hook", "scalar_metric", "temporary_hooks"]


def scalar_metric(metric: Metric, logits: torch.Tensor) -> torch.Tensor:
    """Evaluate ``metric`` and reduce it to a 0-d tensor (mean of a vector)."""
    value = metric(logits)
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=logits.dtype, device=logits.device)
    if value.ndim > 0:
        value = value.float().mean() if value.numel() > 1 else value.reshape(())
    if not torch.isfinite(value.detach()):
        raise ValueError(f"The metric returned a non-finite value ({float(value.detach())}).")
    return value


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a model output (a tensor, or an object / tuple holding them)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"Could not find logits in a model output of type {type(output).__name__}.")



@contextlib.contextmanager
def temporary_hooks(
    model: nn.Module, hooks: Sequence[tuple[str, HookFn]], prepend: bool = False
) -> Iterator[None]:
    """Add forward hooks ``(hook_name, fn)`` for the block; they are removed even on error.

    Names are checked against ``model.hook_dict`` (with close matches in the error message).
    ``prepend=True`` puts the hooks before every existing hook of the hook point, i.e. before
    an SAE splice there, so the SAE sees the modified activation.
    """
    hook_dict = get_hook_dict(model)
    for name, _ in hooks:
        if name not in hook_dict:
            raise KeyError(unknown_hook_message(name, hook_dict, model))
    added = []
    try:
        # Prepending in reverse keeps the given order among the prepended hooks.
        for name, fn in reversed(hooks) if prepend else hooks:
            point = hook_dict[name]
            added.append((point, add_lens_hook(point, fn, prepend=prepend)))
        yield
    finally:
        for point, handle in reversed(added):
            remove_lens_hook(point, handle)


def capture(
    model: nn.Module,
    tokens: torch.Tensor,
    names: Sequence[str],
    keep_graph: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass; returns the logits and the activations at ``names``.

    With ``keep_graph=False`` it runs under ``no_grad`` and the activations are detached. With
    ``keep_graph=True`` the activations stay in the graph (non-leaf tensors, so gradients of the
    output reach upstream nodes through them); an activation that does not require grad (frozen
    model and SAEs) is replaced by a leaf that does.
    """
    store: dict[str, torch.Tensor] = {}

    def make(name: str) -> HookFn:
        def hook(t: torch.Tensor, hook: Any = None) -> torch.Tensor | None:  # noqa: ARG001
            if keep_graph and not t.requires_grad:
                t = t.detach().requires_grad_(True)
                store[name] = t
                return t
            store[name] = t if keep_graph else t.detach()
            return None

        return hook

    ctx = torch.enable_grad() if keep_graph else torch.no_grad()
    with ctx, temporary_hooks(model, [(n, make(n)) for n in names]):
        logits = logits_of(model(tokens))
    missing = [n for n in names if n not in store]
    if missing:
        raise RuntimeError(f"Hook points {missing} did not fire during the forward pass.")
    return logits, store



def replace_hook(value: torch.Tensor) -> HookFn:
    """A hook that replaces the activation by ``value`` (of the same shape)."""

    def hook(t: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG001
        if t.shape != value.shape:
            raise RuntimeError(f"Replacement of shape {list(value.shape)} for an activation of shape {list(t.shape)}.")
        return value

    return hook

