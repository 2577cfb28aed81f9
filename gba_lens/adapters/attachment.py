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
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sae_lens import SAE
from torch import nn
from transformer_lens.hook_points import HookPoint, LensHandle

from gba_lens.adapters.hooks import (
    HOOK_SAE_ACTS_POST,
    HOOK_SAE_ERROR,
    HOOK_SAE_INPUT,
    HOOK_SAE_OUTPUT,
    HOOK_SAE_RECONS,
    ActivationSpec,
    add_lens_hook,
    alias_names,
    gating_switch,
    get_hook_dict,
    model_kind,
    probe_activations,
    remove_lens_hook,
    resolve_hook_points,
    unknown_hook_message,
)
from gba_lens.adapters.registry import HookRegistry, _Entry
from gba_lens.adapters.splice import SAESplice

# SAE object -> description of where it is attached; an SAE's hook points can only live at one
# place in one model at a time (they are shared with the SAE, not copied).
_ATTACHED_SAES: weakref.WeakKeyDictionary[SAE[Any], str] = weakref.WeakKeyDictionary()


@dataclass
class _Spliced:
    """Book-keeping for one spliced hook point."""

    hook_name: str
    hook_point: HookPoint
    names: list[str]  # every hook_dict name of hook_point, canonical first
    splice: SAESplice
    handle: LensHandle | None = None
    entry: _Entry | None = None


class Attachment:
    """SAEs spliced into a model; returned by :func:`attach`.

    Attributes:
        model: the model the SAEs are attached to.
        saes: ``{hook_name: sae}`` as passed to :func:`attach`.
        error_term: whether the reconstruction error is added back (output unchanged).

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
        plan = _plan(model, saes, error_term)  # validates everything first
        self.model = model
        self.saes: dict[str, SAE[Any]] = dict(saes)
        self.error_term: bool = error_term
        self._spliced: dict[str, _Spliced] = {}
        self._alias_to_key: dict[str, str] = {}
        self._attached = False
        self._attach(plan)

    # ------------------------------------------------------------------ set-up / tear-down
    def _attach(self, plan: list[_Spliced]) -> None:
        registry = HookRegistry(self.model)
        done: list[_Spliced] = []
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
            _ATTACHED_SAES[item.splice.sae] = (
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
            _ATTACHED_SAES.pop(item.splice.sae, None)

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
        """True until :meth:`detach` is called."""
        return self._attached

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
        state = "attached" if self._attached else "detached"
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
            is added back, so the model's output is unchanged while the feature activations,
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


# ---------------------------------------------------------------------- validation / planning
def _plan(model: nn.Module, saes: Mapping[str, SAE[Any]], error_term: bool) -> list[_Spliced]:
    """Validate everything and build (unapplied) splices; raises before touching the model."""
    if not isinstance(saes, Mapping):
        raise TypeError(
            f"`saes` must be a mapping {{hook_name: sae}}, got {type(saes).__name__}."
        )
    if not saes:
        raise ValueError("`saes` is empty: pass at least one {hook_name: sae}.")
    if not isinstance(error_term, bool):
        raise TypeError(f"`error_term` must be a bool, got {type(error_term).__name__}.")
    hook_dict = get_hook_dict(model)
    for name, sae in saes.items():
        if not isinstance(sae, SAE):
            raise TypeError(
                f"The value for {name!r} is a {type(sae).__name__}, not a sae_lens.SAE."
            )
    hook_points = resolve_hook_points(model, saes)

    seen_points: dict[int, str] = {}
    seen_saes: dict[int, str] = {}
    names_of: dict[str, list[str]] = {}
    for name, hook_point in hook_points.items():
        if ".hook_sae_" in name:
            raise ValueError(
                f"{name!r} is an SAE hook point of another attachment; attach SAEs to model "
                "hook points only."
            )
        if id(hook_point) in seen_points:
            raise ValueError(
                f"{name!r} and {seen_points[id(hook_point)]!r} are the same hook point; attach "
                "one SAE per hook point."
            )
        seen_points[id(hook_point)] = name
        sae = saes[name]
        if id(sae) in seen_saes:
            raise ValueError(
                f"The same SAE object is given for {seen_saes[id(sae)]!r} and {name!r}; its hook "
                "points can only be in one place. Pass copy.deepcopy(sae) for the second."
            )
        seen_saes[id(sae)] = name
        if sae in _ATTACHED_SAES:
            raise ValueError(
                f"This SAE is already attached at {_ATTACHED_SAES[sae]}; detach that attachment "
                "first or attach copy.deepcopy(sae)."
            )
        names = alias_names(model, hook_point)
        names_of[name] = names
        taken = any(f"{n}.{HOOK_SAE_ACTS_POST}" in hook_dict for n in names)
        if taken or any(isinstance(c, HookPoint) for c in hook_point.children()):
            raise ValueError(
                f"An SAE is already attached at {name!r}; detach it before attaching another."
            )
        switch = gating_switch(model, [name, *names])
        if switch is not None:
            attribute, setter = switch
            raise ValueError(
                f"Hook {name!r} only fires when cfg.{attribute} is True: call "
                f"`model.{setter}(True)` before attaching."
            )

    specs = probe_activations(model, hook_points)
    plan: list[_Spliced] = []
    notes: list[str] = []
    for name, hook_point in hook_points.items():
        if name not in specs:
            raise ValueError(
                f"Hook {name!r} did not fire during a probe forward pass, so nothing would be "
                "replaced there. Is it switched off by a model setting (e.g. "
                "set_use_attn_result / set_use_attn_in / set_use_split_qkv_input)?"
            )
        sae = saes[name]
        head_shape = _check_sae_fits(name, sae, specs[name], notes)
        plan.append(
            _Spliced(
                hook_name=name,
                hook_point=hook_point,
                names=names_of[name],
                splice=SAESplice(sae, error_term=error_term, head_shape=head_shape),
            )
        )
        _note_metadata_hook(model, name, hook_point, sae, notes)
    for note in notes:  # only once everything validated
        warnings.warn(note, UserWarning, stacklevel=4)
    return plan


def _check_sae_fits(
    name: str, sae: SAE[Any], spec: ActivationSpec, notes: list[str]
) -> tuple[int, int] | None:
    """Check width / layout / device / dtype (dtype: a note for ``notes``); return the head
    shape to flatten, if any."""
    d_in = int(sae.cfg.d_in)
    d_out = getattr(sae.cfg, "d_out", d_in)
    if d_out != d_in:
        raise ValueError(
            f"The SAE for {name!r} maps d_in={d_in} to d_out={d_out} (a transcoder); attach() "
            "splices SAEs that reconstruct their input."
        )
    feature_shape = spec.feature_shape
    sae_reshapes = bool(getattr(sae, "hook_z_reshaping_mode", False))
    head_shape: tuple[int, int] | None = None
    if len(feature_shape) == 1:
        width = feature_shape[0]
        if sae_reshapes:
            raise ValueError(
                f"The SAE for {name!r} has reshape_activations='hook_z' (expects "
                f"[..., n_heads, d_head]) but {name!r} gives [batch, pos, {width}] activations."
            )
    elif len(feature_shape) == 2:
        n_heads, d_head = feature_shape
        width = n_heads * d_head
        if not sae_reshapes:
            head_shape = (n_heads, d_head)
        if d_in == d_head and d_in != width:
            raise ValueError(
                f"The SAE for {name!r} has d_in={d_in} = d_head: per-head SAEs are not "
                f"supported; attach() flattens the {n_heads} heads to n_heads*d_head={width}."
            )
    else:
        raise ValueError(
            f"Hook {name!r} gives activations of shape {list(spec.shape)} (batch, pos, ...); "
            "attach() supports [batch, pos, d] and [batch, pos, n_heads, d_head]."
        )
    if d_in != width:
        if len(feature_shape) == 1:
            layout = f"{width}-dimensional"
        else:
            layout = f"{feature_shape[0]}x{feature_shape[1]} (n_heads x d_head = {width})"
        raise ValueError(
            f"SAE d_in={d_in} does not match hook {name!r}, whose activations are {layout} "
            "per position."
        )
    sae_param = next(iter(sae.parameters()), None)
    if sae_param is not None:
        if sae_param.device != spec.device:
            raise ValueError(
                f"The SAE for {name!r} is on {sae_param.device} but the activations are on "
                f"{spec.device}: move it with `sae.to({str(spec.device)!r})`."
            )
        if sae_param.dtype != spec.dtype:
            notes.append(
                f"The SAE for {name!r} is {sae_param.dtype} but the activations are "
                f"{spec.dtype}: the SAE runs in {sae_param.dtype} and its output is cast to "
                f"{spec.dtype}. Use `sae.to({spec.dtype})` to avoid the casts."
            )
    return head_shape


def _note_metadata_hook(
    model: nn.Module, name: str, hook_point: HookPoint, sae: SAE[Any], notes: list[str]
) -> None:
    """Note when the SAE says it was trained on another hook than the one it is put at."""
    trained_on = getattr(sae.cfg.metadata, "hook_name", None)
    if not trained_on or trained_on == name:
        return
    hook_dict = get_hook_dict(model)
    if hook_dict.get(trained_on) is not hook_point:
        known = trained_on in hook_dict
        where = "" if known else f" ({unknown_hook_message(trained_on, hook_dict, model)})"
        notes.append(
            f"The SAE attached at {name!r} has cfg.metadata.hook_name={trained_on!r}{where}."
        )


def _undo(model: nn.Module, registry: HookRegistry, items: list[_Spliced]) -> None:
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
