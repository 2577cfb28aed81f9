"""Validation and planning of :func:`gba_lens.attach`: every check runs before the model is touched.

:func:`plan_splices` checks the arguments, resolves the hook points, runs one 2-token probe
forward pass to learn each hook's activation shape, dtype and device, checks that each SAE fits,
and returns the (unapplied) splices that :class:`~gba_lens.adapters.Attachment` then installs.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sae_lens import SAE
from torch import nn

from gba_lens.adapters.hooks import (
    HOOK_SAE_ACTS_POST,
    ActivationSpec,
    alias_names,
    gating_switch,
    get_hook_dict,
    probe_activations,
    resolve_hook_points,
    unknown_hook_message,
)
from gba_lens.adapters.registry import _Entry
from gba_lens.adapters.splice import SAESplice
from gba_lens.compat import HookPoint, LensHandle

__all__ = ["ATTACHED_SAES", "Spliced", "plan_splices"]

# SAE object -> description of where it is attached; an SAE's hook points can only live at one
# place in one model at a time (they are shared with the SAE, not copied).
ATTACHED_SAES: weakref.WeakKeyDictionary[SAE[Any], str] = weakref.WeakKeyDictionary()


@dataclass
class Spliced:
    """Book-keeping for one spliced hook point."""

    hook_name: str
    hook_point: HookPoint
    names: list[str]  # every hook_dict name of hook_point, canonical first
    splice: SAESplice
    handle: LensHandle | None = None
    entry: _Entry | None = None



def plan_splices(model: nn.Module, saes: Mapping[str, SAE[Any]], error_term: bool) -> list[Spliced]:
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
        if sae in ATTACHED_SAES:
            raise ValueError(
                f"This SAE is already attached at {ATTACHED_SAES[sae]}; detach that attachment "
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
    plan: list[Spliced] = []
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
            Spliced(
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
