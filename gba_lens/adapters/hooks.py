"""Hook-point helpers shared by the adapters: name validation, gated hooks, probing, handles.

Everything here works through what ``HookedTransformer``, ``HookedSAETransformer`` and
``TransformerBridge`` share: ``model.hook_dict`` (name -> :class:`HookPoint`),
``HookPoint.add_hook`` and a plain ``model(tokens)`` forward call. On a ``TransformerBridge``
several names (the legacy HookedTransformer alias and the bridge's canonical name) map to the
same ``HookPoint`` object; ``HookPoint.name`` is then the canonical one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gba_lens.compat import HookPoint, LensHandle

# Suffixes of the SAE hook points an attachment adds under each spliced hook name. They are the
# names SAELens's HookedSAETransformer uses (``f"{hook_name}.hook_sae_acts_post"``, ...).
HOOK_SAE_INPUT = "hook_sae_input"
HOOK_SAE_ACTS_PRE = "hook_sae_acts_pre"
HOOK_SAE_ACTS_POST = "hook_sae_acts_post"
HOOK_SAE_RECONS = "hook_sae_recons"
HOOK_SAE_ERROR = "hook_sae_error"
HOOK_SAE_OUTPUT = "hook_sae_output"
SAE_HOOK_SUFFIXES: tuple[str, ...] = (
    HOOK_SAE_INPUT,
    HOOK_SAE_ACTS_PRE,
    HOOK_SAE_ACTS_POST,
    HOOK_SAE_RECONS,
    HOOK_SAE_ERROR,
    HOOK_SAE_OUTPUT,
)

# Hook points that exist in ``hook_dict`` but only fire once a model setting is switched on.
# (name suffixes, cfg attribute, setter to call). Same table on HookedTransformer and the bridge.
GATED_HOOKS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("attn.hook_result",), "use_attn_result", "set_use_attn_result"),
    (
        ("hook_q_input", "hook_k_input", "hook_v_input"),
        "use_split_qkv_input",
        "set_use_split_qkv_input",
    ),
    (("hook_attn_in",), "use_attn_in", "set_use_attn_in"),
    (("hook_mlp_in",), "use_hook_mlp_in", "set_use_hook_mlp_in"),
)


class UnknownHookNameError(ValueError, KeyError):
    """A hook name that is not in ``model.hook_dict``.

    Subclasses both ``ValueError`` (bad argument) and ``KeyError`` (what HookedTransformer
    raises for an unknown hook name), so either ``except`` clause catches it.
    """

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


def is_bridge(model: nn.Module) -> bool:
    """True for a TransformerLens ``TransformerBridge`` (any subclass)."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - TransformerLens without the bridge
        return False
    return isinstance(model, TransformerBridge)


def model_kind(model: nn.Module) -> str:
    """A short human-readable name of the model's class, for messages."""
    return type(model).__name__


def get_hook_dict(model: nn.Module) -> dict[str, HookPoint]:
    """``model.hook_dict`` (an attribute on HookedRootModule, a property on the bridge)."""
    hook_dict = getattr(model, "hook_dict", None)
    if not isinstance(hook_dict, Mapping):
        raise TypeError(
            f"{model_kind(model)} has no `hook_dict`: attach() needs a TransformerLens model "
            "(HookedTransformer, HookedSAETransformer or TransformerBridge)."
        )
    return dict(hook_dict)


def unknown_hook_message(name: str, known: Iterable[str], model: nn.Module) -> str:
    """Message for an unknown hook name, listing close matches (difflib)."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Close matches: {close}." if close else ""
    return (
        f"Unknown hook name {name!r} for {model_kind(model)} ({len(known)} hook points).{hint} "
        "See `model.hook_dict` for all names."
    )


def resolve_hook_points(model: nn.Module, names: Iterable[str]) -> dict[str, HookPoint]:
    """Map each name to its ``HookPoint``, raising :class:`UnknownHookNameError` for unknown ones.

    ``TransformerBridge.run_with_hooks`` silently ignores unknown names, so the check is done
    here against ``hook_dict`` for every model kind.
    """
    hook_dict = get_hook_dict(model)
    resolved: dict[str, HookPoint] = {}
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"Hook names must be strings, got {type(name).__name__}: {name!r}.")
        hook_point = hook_dict.get(name)
        if not isinstance(hook_point, HookPoint):
            raise UnknownHookNameError(unknown_hook_message(name, hook_dict, model))
        resolved[name] = hook_point
    return resolved


def alias_names(model: nn.Module, hook_point: HookPoint) -> list[str]:
    """Every ``hook_dict`` name that refers to ``hook_point``, canonical name first.

    On HookedTransformer this is just the module path; on a bridge it also holds the legacy
    aliases (e.g. ``blocks.0.hook_resid_pre`` for ``blocks.0.hook_in``).
    """
    names = [name for name, hp in get_hook_dict(model).items() if hp is hook_point]
    canonical = hook_point.name
    names.sort(key=lambda n: (n != canonical,))
    return names


def gating_switch(model: nn.Module, names: Iterable[str]) -> tuple[str, str] | None:
    """``(cfg_attribute, setter)`` if a hook with one of these names is switched off, else None."""
    cfg = getattr(model, "cfg", None)
    for name in names:
        for suffixes, attribute, setter in GATED_HOOKS:
            if name.endswith(suffixes) and getattr(cfg, attribute, True) is False:
                return attribute, setter
    return None


def add_lens_hook(
    hook_point: HookPoint,
    fn: Callable[..., Any],
    *,
    prepend: bool = False,
    is_permanent: bool = False,
) -> LensHandle:
    """Add a forward hook through ``HookPoint.add_hook`` and return its exact ``LensHandle``.

    Going through ``add_hook`` (rather than ``register_forward_hook``) keeps the bridge's
    per-hook tensor conversions (e.g. ``attn.hook_z`` is stored flat but shown to hooks as
    ``[batch, pos, n_heads, d_head]``). The handle lets :func:`remove_lens_hook` remove just
    this hook, leaving the caller's own (permanent or not) hooks alone.
    """
    before = {id(handle) for handle in hook_point.fwd_hooks}
    hook_point.add_hook(fn, dir="fwd", is_permanent=is_permanent, prepend=prepend)
    added = [handle for handle in hook_point.fwd_hooks if id(handle) not in before]
    if len(added) != 1:  # pragma: no cover - would mean TransformerLens changed add_hook
        raise RuntimeError("Could not identify the hook just added to the HookPoint.")
    return added[0]


def remove_lens_hook(hook_point: HookPoint, handle: LensHandle) -> None:
    """Remove one hook added by :func:`add_lens_hook` (no-op if already removed)."""
    handle.hook.remove()
    hook_point.fwd_hooks = [h for h in hook_point.fwd_hooks if h is not handle]


@dataclass(frozen=True)
class ActivationSpec:
    """What one hook point produced during the probe forward pass.

    ``shape`` is the full shape of the probe activation (``[1, n_probe_tokens, ...]``);
    ``feature_shape`` drops the batch and position axes: ``(d,)`` for residual / MLP hooks,
    ``(n_heads, d_head)`` for per-head hooks such as ``attn.hook_z``.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.shape[2:]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def probe_activations(
    model: nn.Module, hook_points: Mapping[str, HookPoint], n_tokens: int = 2
) -> dict[str, ActivationSpec]:
    """Run one tiny forward pass (``[1, n_tokens]`` zero tokens, no grad) and record each hook.

    Returns the shape, dtype and device of every hook point that fired; hooks that did not fire
    are absent from the result. The probe hooks are removed even if the forward pass raises.
    """
    records: dict[str, ActivationSpec] = {}
    added: list[tuple[HookPoint, LensHandle]] = []

    def make_recorder(name: str) -> Callable[..., None]:
        def record(tensor: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
            if isinstance(tensor, torch.Tensor) and name not in records:
                records[name] = ActivationSpec(tuple(tensor.shape), tensor.dtype, tensor.device)

        return record

    tokens = torch.zeros((1, n_tokens), dtype=torch.long, device=model_device(model))
    try:
        for name, hook_point in hook_points.items():
            added.append((hook_point, add_lens_hook(hook_point, make_recorder(name))))
        with torch.no_grad():
            model(tokens)
    finally:
        for hook_point, handle in reversed(added):
            remove_lens_hook(hook_point, handle)
    return records
