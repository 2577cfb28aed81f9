"""``attach(model, {hook_name: sae}, error_term=...)``: splice SAEs into a TransformerLens model.

Example::

    with gba_lens.attach(model, {"blocks.0.hook_resid_post": sae}, error_term=True) as att:
        logits, cache = model.run_with_cache(tokens)
        feats = cache[att.feature_hook_name("blocks.0.hook_resid_post")]

    att = gba_lens.attach(model, {"blocks.1.attn.hook_z": sae_z})   # permanent form
    ...
    att.detach()

How it works: the model's ``HookPoint`` at each name gets one permanent forward hook (added
first, so it runs before any other hook there) that replaces the activation with the SAE's
reconstruction (plus the error term); the SAE's hook points are registered as model hook
points named ``f"{hook_name}.{suffix}"`` (see :mod:`gba_lens.adapters.registry`). No model
module is replaced, so ``state_dict`` and parameters are untouched, and hooks added by the user
at ``hook_name`` itself see the value that flows downstream (the SAE output).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from sae_lens import SAE
from torch import nn

from gba_lens.adapters.hooks import (
    HOOK_SAE_ACTS_POST,
    HOOK_SAE_ERROR,
    HOOK_SAE_INPUT,
    HOOK_SAE_OUTPUT,
    HOOK_SAE_RECONS,
    add_lens_hook,
    model_kind,
    remove_lens_hook,
)
from gba_lens.adapters.planning import ATTACHED_SAES, Spliced, plan_splices
from gba_lens.adapters.registry import HookRegistry
from gba_lens.adapters.splice import SAESplice

class Attachment:
    """SAEs spliced into a model; returned by :func:`attach`.

    Attributes:
        model: the model the SAEs are attached to.
        saes: ``{hook_name: sae}`` as passed to :func:`attach`.
        error_term: whether the reconstruction error is added back (output unchanged up to
            floating-point rounding).

    Hook names (``hook_name`` is a key of :attr:`saes`, or on a bridge any alias of it):

    ========================================  ==========================================
    ``f"{hook_name}.hook_sae_input"``         SAE input (flattened heads for hook_z)
    ``f"{hook_name}.hook_sae_acts_pre"``      encoder pre-activations ``[..., d_sae]``
    ``f"{hook_name}.hook_sae_acts_post"``     feature activations ``[..., d_sae]``
    ``f"{hook_name}.hook_sae_recons"``        reconstruction (SAE space)
    ``f"{hook_name}.hook_sae_error"``         ``x - recons`` (hook's shape; error_term only)
    ``f"{hook_name}.hook_sae_output"``        what replaces the activation (hook's shape)
    ========================================  ==========================================

    On a ``TransformerBridge`` these names exist both with the name you passed (e.g. the legacy
    ``blocks.0.hook_resid_post``) and with the bridge's canonical name (``blocks.0.hook_out``);
    :meth:`canonical_hook_name` gives the latter. ``run_with_cache`` returns whichever names you
    filter on; ``run_with_hooks`` accepts both.

    Use as a context manager (detached on exit, also when the body raises) or keep it and call
    :meth:`detach`. Detaching restores ``hook_dict``, the module tree and the hook lists exactly.
    """

    def __init__(
        self, model: nn.Module, saes: Mapping[str, SAE[Any]], error_term: bool = False
    ) -> None:
        plan = plan_splices(model, saes, error_term)  # validates everything first
        self.model = model
        self.saes: dict[str, SAE[Any]] = dict(saes)
        self.error_term: bool = error_term
        self._spliced: dict[str, Spliced] = {}
        self._alias_to_key: dict[str, str] = {}
        self._attached = False
        self._lost: list[str] = []  # hook names whose splice was removed behind our back
        self._attach(plan)

    # ------------------------------------------------------------------ set-up / tear-down
    def _attach(self, plan: list[Spliced]) -> None:
        registry = HookRegistry(self.model)
        done: list[Spliced] = []
        try:
            for item in plan:
                item.entry = registry.add(item.hook_point, item.names, item.splice.hook_points)
                done.append(item)
            registry.refresh()
            for item in plan:
                item.handle = add_lens_hook(
                    item.hook_point, item.splice, prepend=True, is_permanent=True
                )
        except Exception:
            _undo(self.model, registry, done)
            raise
        for item in plan:
            self._spliced[item.hook_name] = item
            for name in item.names:
                self._alias_to_key[name] = item.hook_name
            ATTACHED_SAES[item.splice.sae] = (
                f"{item.hook_name!r} of a {model_kind(self.model)} (id {id(self.model)})"
            )
        self._registry = registry
        self._attached = True

    def detach(self) -> None:
        """Remove the SAEs and restore the model exactly. Safe to call more than once."""
        if not self._attached:
            return
        self._attached = False
        items = list(self._spliced.values())
        _undo(self.model, self._registry, items)
        for item in items:
            ATTACHED_SAES.pop(item.splice.sae, None)

    def __enter__(self) -> Attachment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    # ------------------------------------------------------------------ introspection
    @property
    def attached(self) -> bool:
        """True until :meth:`detach` is called, or until the splice hooks are found removed.

        Something else can remove the SAE hooks (``model.reset_hooks(including_permanent=True)``
        removes every hook of every hook point). The attachment then no longer claims to be
        attached: it warns once, naming the hooks, and detaches the rest (the model is restored
        to its state without SAEs).
        """
        if self._attached:
            self._check_hooks()
        return self._attached

    @property
    def hooks_removed_externally(self) -> list[str]:
        """Hook names whose splice hook was removed by something other than :meth:`detach`."""
        if self._attached:
            self._check_hooks()
        return list(self._lost)

    def _check_hooks(self) -> None:
        lost = [name for name, item in self._spliced.items() if not _hook_present(item)]
        if not lost:
            return
        self._lost = lost
        self.detach()
        warnings.warn(
            f"The SAE hooks at {lost} were removed by something other than Attachment.detach() "
            "(e.g. model.reset_hooks(including_permanent=True)): the model no longer runs the "
            "SAEs, so this Attachment is now detached. Attach again to use them.",
            UserWarning,
            stacklevel=3,
        )

    @property
    def hook_names(self) -> list[str]:
        """The spliced hook names, as passed to :func:`attach`."""
        return list(self.saes)

    def _key(self, hook_name: str) -> str:
        key = self._alias_to_key.get(hook_name)
        if key is None:
            raise KeyError(
                f"No SAE of this attachment is spliced at {hook_name!r}. Attached: "
                f"{list(self.saes)}."
            )
        return key

    def sae_hook_name(self, hook_name: str, suffix: str) -> str:
        """``f"{hook_name}.{suffix}"`` after checking that the hook point exists.

        ``suffix`` is one of ``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post``,
        ``hook_sae_recons``, ``hook_sae_error`` (error_term only), ``hook_sae_output``.
        """
        item = self._spliced[self._key(hook_name)]
        points = item.splice.hook_points
        if suffix not in points:
            if suffix == HOOK_SAE_ERROR:
                raise ValueError(
                    f"No error node at {hook_name!r}: the SAEs were attached with "
                    "error_term=False. Use attach(..., error_term=True)."
                )
            raise ValueError(f"Unknown SAE hook suffix {suffix!r}; available: {list(points)}.")
        return f"{hook_name}.{suffix}"

    def feature_hook_name(self, hook_name: str) -> str:
        """Hook name of the SAE feature activations (``...hook_sae_acts_post``)."""
        return self.sae_hook_name(hook_name, HOOK_SAE_ACTS_POST)

    def error_hook_name(self, hook_name: str) -> str:
        """Hook name of the error node (``...hook_sae_error``); needs ``error_term=True``."""
        return self.sae_hook_name(hook_name, HOOK_SAE_ERROR)

    def recons_hook_name(self, hook_name: str) -> str:
        """Hook name of the SAE reconstruction (``...hook_sae_recons``)."""
        return self.sae_hook_name(hook_name, HOOK_SAE_RECONS)

    def input_hook_name(self, hook_name: str) -> str:
        """Hook name of the SAE input (``...hook_sae_input``)."""
        return self.sae_hook_name(hook_name, HOOK_SAE_INPUT)

    def output_hook_name(self, hook_name: str) -> str:
        """Hook name of the value that replaces the activation (``...hook_sae_output``)."""
        return self.sae_hook_name(hook_name, HOOK_SAE_OUTPUT)

    def splice(self, hook_name: str) -> SAESplice:
        """The :class:`SAESplice` at ``hook_name`` (its ``.sae``, ``.head_shape``,
        ``.hook_points``); e.g. to re-run its ``reconstruct`` on cached activations."""
        return self._spliced[self._key(hook_name)].splice

    def canonical_hook_name(self, hook_name: str) -> str:
        """The model's canonical name of a spliced hook point (the bridge's ``HookPoint.name``,
        e.g. ``blocks.0.hook_out`` for ``blocks.0.hook_resid_post``; unchanged on
        HookedTransformer). ``f"{canonical}.hook_sae_acts_post"`` etc. are valid names too."""
        item = self._spliced[self._key(hook_name)]
        return item.names[0]

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        if self._lost:
            state += f" (hooks at {self._lost} were removed externally)"
        inner = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in self.saes.items())
        return (
            f"Attachment({model_kind(self.model)}, {{{inner}}}, error_term={self.error_term}, "
            f"{state})"
        )


def attach(
    model: nn.Module, saes: Mapping[str, SAE[Any]], error_term: bool = False
) -> Attachment:
    """Splice one or several SAEs into ``model`` at named hook points.

    Args:
        model: a ``HookedTransformer``, ``HookedSAETransformer`` or ``TransformerBridge``.
        saes: ``{hook_name: sae}``; any ``sae_lens.SAE`` (standard, topk, jumprelu, gated, ...,
            including GBA SAEs saved by gba_lens, which load as ``jumprelu``). Hook names may be
            residual (``blocks.N.hook_resid_pre/mid/post``), ``hook_attn_out``, ``hook_mlp_out``,
            ``mlp.hook_post``, ``attn.hook_z`` (heads flattened to ``n_heads * d_head`` and back,
            for SAEs with ``cfg.reshape_activations="hook_z"`` as well as plain SAEs with that
            ``d_in``), or any other hook point. On a bridge, legacy and canonical names both work.
        error_term: if True the SAE's reconstruction error (computed from the clean activation)
            is added back, so the model's output is unchanged (up to floating-point rounding:
            ``recons + (x - recons)`` differs from ``x`` by a few ulps) while the feature activations,
            reconstruction and error are exposed as hook points (gradients reach both features
            and the error node; see :class:`~gba_lens.adapters.splice.SAESplice`). The SAE's own
            ``use_error_term`` flag is ignored.

    Returns:
        An :class:`Attachment`: a context manager, or call ``.detach()`` later.

    Raises (before anything is changed or run, except one 2-token probe forward pass):
        UnknownHookNameError (a ValueError and KeyError): unknown hook name, with close matches.
        TypeError: not a TransformerLens model, or a value that is not a ``sae_lens.SAE``.
        ValueError: empty mapping; the same SAE object or hook point twice; an SAE already
            attached (detach it first, or pass ``copy.deepcopy(sae)``); a gated hook that needs
            ``model.set_use_attn_result(True)`` / ``set_use_split_qkv_input(True)`` /
            ``set_use_attn_in(True)`` / ``set_use_hook_mlp_in(True)``; a hook that did not fire;
            ``sae.cfg.d_in`` not matching the hook's width; the SAE on another device than the
            activations (move it with ``sae.to(device)``; the SAE is never moved for you).
    Warns:
        UserWarning: SAE dtype differs from the activation dtype. The SAE then runs in its own
            dtype and its output is cast back to the activation dtype (the SAE is not modified).
    """
    return Attachment(model, saes, error_term=error_term)


def _hook_present(item: Spliced) -> bool:
    """Whether the splice hook of ``item`` is still on its hook point (TransformerLens's list and
    PyTorch's hook dict both, as ``HookPoint.remove_hooks`` clears both)."""
    handle = item.handle
    if handle is None:
        return False
    in_lens = any(h is handle for h in item.hook_point.fwd_hooks)
    return in_lens and handle.hook.id in item.hook_point._forward_hooks


def _undo(model: nn.Module, registry: HookRegistry, items: list[Spliced]) -> None:
    """Remove hooks and registered hook points of ``items`` (reverse order), then refresh."""
    errors: list[BaseException] = []
    for item in reversed(items):
        try:
            if item.handle is not None:
                remove_lens_hook(item.hook_point, item.handle)
                item.handle = None
            if item.entry is not None:
                registry.remove(item.entry)
                item.entry = None
        except Exception as exc:  # pragma: no cover - keep undoing the others
            errors.append(exc)
    registry.refresh()
    if errors:  # pragma: no cover
        raise errors[0]
