"""Input coercion and validation shared by the circuit utilities.

* :func:`attached` - accept an :class:`~gba_lens.adapters.Attachment` or a model plus
  ``{hook_name: sae}`` (attached for the duration of the call, with the error term);
* :func:`hook_key` / :func:`d_sae_of` - find the attached SAE of a hook name (any alias);
* :func:`normalize_features`, :func:`position_mask`, :func:`to_tokens` - turn the accepted forms
  of :data:`~gba_lens.circuits.types.FeaturesLike`, ``PositionsLike`` and ``TokensLike`` into
  tensors, with a one-line error naming what is wrong.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Int
from sae_lens import SAE
from torch import nn

from gba_lens.adapters import Attachment, attach
from gba_lens.adapters.hooks import model_device
from gba_lens.circuits.metrics import logit_diff_metric
from gba_lens.circuits.types import FeaturesLike, Metric, ModelOrAttachment, PositionsLike, TokensLike

__all__ = [
    "attached",
    "feature_id",
    "check_same_shape",
    "d_sae_of",
    "hook_key",
    "node_names",
    "normalize_features",
    "position_mask",
    "resolve_metric",
    "to_tokens",
    "warn_if_no_error_term",
]


# --------------------------------------------------------------------------------- attachments
@contextlib.contextmanager
def attached(
    model_or_attachment: ModelOrAttachment,
    saes: Mapping[str, SAE[Any]] | None = None,
    error_term: bool = True,
) -> Iterator[Attachment]:
    """Yield an attached :class:`Attachment`.

    An ``Attachment`` (from :func:`gba_lens.attach`) is used as is; a model with ``saes`` gets
    them attached (with the error term by default) for the duration of the ``with`` block.
    """
    if isinstance(model_or_attachment, Attachment):
        if saes is not None:
            raise ValueError(
                "Pass either an Attachment (SAEs already attached) or a model and `saes`, not "
                "both."
            )
        if not model_or_attachment.attached:
            lost = model_or_attachment.hooks_removed_externally
            why = f" (its hooks at {lost} were removed externally, e.g. by reset_hooks)" if lost else ""
            raise ValueError(f"This Attachment has been detached{why}; attach the SAEs again.")
        yield model_or_attachment
        return
    if saes is None:
        raise TypeError(
            f"Got a {type(model_or_attachment).__name__} without SAEs: pass the Attachment "
            "returned by gba_lens.attach(model, {hook: sae}, error_term=True), or the model and "
            "saes={hook_name: sae}."
        )
    with attach(model_or_attachment, saes, error_term=error_term) as att:
        yield att


def hook_key(att: Attachment, hook: str) -> str:
    """The key of ``att.saes`` for ``hook`` (any alias), with a helpful error otherwise."""
    if hook in att.saes:
        return hook
    try:  # another name of an attached hook point (legacy / canonical names on a bridge)
        canonical = att.canonical_hook_name(hook)
        for key in att.saes:
            if att.canonical_hook_name(key) == canonical:
                return key
    except KeyError:
        pass
    import difflib

    close = difflib.get_close_matches(hook, list(att.saes), n=3, cutoff=0.5)
    hint = f" Close matches: {close}." if close else ""
    raise KeyError(f"No SAE is attached at {hook!r}. Attached hooks: {list(att.saes)}.{hint}")


def d_sae_of(att: Attachment, hook: str) -> int:
    """Number of features of the SAE at ``hook``."""
    return int(att.saes[hook_key(att, hook)].cfg.d_sae)


def warn_if_no_error_term(att: Attachment, what: str) -> None:
    """Interventions without the error term also remove the SAE's reconstruction error."""
    if not att.error_term:
        import warnings

        warnings.warn(
            f"{what}: the SAEs are attached with error_term=False, so the baseline is the "
            "SAE-reconstructed model, not the clean model. Attach with error_term=True to remove "
            "only the chosen features' contribution (the reconstruction error then stays).",
            UserWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------- features
def feature_id(value: Any, hook: str, d_sae: int) -> int:
    """One feature id: an integer (Python, NumPy or a one-element integer tensor) in
    ``[0, d_sae)``. Floats, bools and strings are refused rather than converted."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
            raise ValueError(f"Feature ids must be integers, got a {value.dtype} tensor {value.tolist()} for {hook!r}.")
        value = int(value.item())
    elif isinstance(value, bool):
        raise ValueError(f"Feature ids must be integers, got the bool {value!r} for {hook!r}.")
    else:
        try:
            value = operator.index(value)
        except TypeError:
            raise ValueError(
                f"Feature ids must be integers, got {value!r} ({type(value).__name__}) for {hook!r}."
            ) from None
    if not 0 <= value < d_sae:
        raise ValueError(f"Feature {value} is out of range for the SAE at {hook!r} (d_sae={d_sae}).")
    return value


def normalize_features(att: Attachment, features: FeaturesLike) -> dict[str, torch.Tensor]:
    """``{hook_key: LongTensor of distinct feature ids}`` (validated against each SAE's d_sae).

    Refused with a ValueError: non-integer ids (floats, bools, strings), ids out of range, a
    boolean mask whose length is not d_sae, and no feature at all.
    """
    out: dict[str, dict[int, None]] = {}

    def add(hook: str, ids: Any) -> None:
        key = hook_key(att, hook)
        d_sae = d_sae_of(att, key)
        if isinstance(ids, torch.Tensor) and ids.ndim > 0:
            if ids.dtype == torch.bool:
                if ids.shape != (d_sae,):
                    raise ValueError(
                        f"A boolean feature mask for {key!r} must have shape [d_sae] = [{d_sae}], got "
                        f"{list(ids.shape)}."
                    )
                ids = torch.nonzero(ids).flatten()
            elif ids.is_floating_point() or ids.is_complex():
                raise ValueError(f"Feature ids must be integers, got a {ids.dtype} tensor for {key!r}.")
            ids = ids.flatten().tolist()
        elif isinstance(ids, (str, bytes)):
            raise ValueError(f"Feature ids must be integers, got the string {ids!r} for {key!r}.")
        elif getattr(ids, "ndim", 0) > 0 and hasattr(ids, "tolist"):  # a NumPy array
            ids = ids.tolist()
        elif not isinstance(ids, Sequence):
            ids = [ids]
        bucket = out.setdefault(key, {})
        for f in ids:
            bucket[feature_id(f, key, d_sae)] = None

    if isinstance(features, Mapping):
        for hook, ids in features.items():
            add(hook, ids)
    elif isinstance(features, (str, bytes)):
        raise ValueError(f"Feature ids must be integers, got the string {features!r}.")
    elif isinstance(features, Sequence):
        items = list(features)
        if items and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in items):
            for hook, f in items:
                add(hook, [f])
        else:
            add(_single_hook(att), items)
    elif isinstance(features, (int, torch.Tensor)) or hasattr(features, "__index__"):
        add(_single_hook(att), features)
    else:
        raise TypeError(
            "features must be an int, a list of ints, {hook: ids} or a list of (hook, id) pairs; "
            f"got {type(features).__name__}."
        )
    result = {k: torch.tensor(list(v), dtype=torch.long) for k, v in out.items() if v}
    if not result:
        raise ValueError("No features given (empty list, mapping or mask): pass at least one feature id.")
    return result


def _single_hook(att: Attachment) -> str:
    if len(att.saes) != 1:
        raise ValueError(
            f"{len(att.saes)} SAEs are attached ({list(att.saes)}): give features as "
            "{hook: ids} or (hook, id) pairs."
        )
    return next(iter(att.saes))


# --------------------------------------------------------------------------------- positions
def position_mask(
    positions: PositionsLike, batch: int, n_pos: int, device: torch.device | str
) -> Bool[torch.Tensor, "batch pos"]:
    """Boolean ``[batch, n_pos]`` mask of the selected positions (see :data:`PositionsLike`)."""
    if positions is None:
        return torch.ones(batch, n_pos, dtype=torch.bool, device=device)
    if isinstance(positions, torch.Tensor):
        if positions.dtype == torch.bool:
            if positions.shape != (batch, n_pos):
                raise ValueError(
                    f"A boolean position mask must be [batch, pos] = {[batch, n_pos]}, got "
                    f"{list(positions.shape)}."
                )
            return positions.to(device)
        if positions.is_floating_point() or positions.is_complex():
            raise ValueError(f"Positions must be integers (or a boolean mask), got a {positions.dtype} tensor.")
        if positions.ndim == 0:
            positions = int(positions)
        elif positions.ndim == 1:
            if positions.shape[0] != batch:
                raise ValueError(
                    f"A 1-D position tensor gives one position per prompt and needs length "
                    f"batch={batch}, got {positions.shape[0]}. Use a list for positions shared "
                    "by all prompts."
                )
            idx = positions.to(device=device, dtype=torch.long)
            idx = torch.where(idx < 0, idx + n_pos, idx)
            if (idx < 0).any() or (idx >= n_pos).any():
                raise ValueError(f"Positions {positions.tolist()} out of range for {n_pos} positions.")
            mask = torch.zeros(batch, n_pos, dtype=torch.bool, device=device)
            mask[torch.arange(batch, device=device), idx] = True
            return mask
        else:
            raise ValueError(f"Position tensors must be 1-D or a [batch, pos] mask, got {positions.ndim}-D.")
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence):
        positions = [positions]
    mask = torch.zeros(batch, n_pos, dtype=torch.bool, device=device)
    for p in positions:
        try:
            q = None if isinstance(p, bool) else operator.index(p)
        except TypeError:
            q = None
        if q is None:
            raise ValueError(f"Positions must be integers, got {p!r} ({type(p).__name__}).")
        q = q + n_pos if q < 0 else q
        if not 0 <= q < n_pos:
            raise ValueError(f"Position {p} out of range for sequences of {n_pos} tokens.")
        mask[:, q] = True
    return mask


# ------------------------------------------------------------------------------------ tokens
def to_tokens(model: nn.Module, tokens: TokensLike) -> Int[torch.Tensor, "batch pos"]:
    """A ``[batch, pos]`` long tensor on the model's device (text goes through ``to_tokens``).

    Refused with a ValueError: an empty batch or no positions, and token ids outside
    ``[0, model.cfg.d_vocab)``.
    """
    if isinstance(tokens, torch.Tensor):
        if tokens.dtype not in (torch.long, torch.int, torch.int32, torch.int16):
            raise TypeError(f"Token tensors must be integer, got {tokens.dtype}.")
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"Tokens must be [batch, pos], got shape {list(tokens.shape)}.")
        out = tokens.to(model_device(model), dtype=torch.long)
    elif isinstance(tokens, str) or (
        isinstance(tokens, Sequence) and tokens and all(isinstance(t, str) for t in tokens)
    ):
        if not hasattr(model, "to_tokens"):
            raise TypeError(f"{type(model).__name__} cannot tokenize text; pass token ids.")
        out = model.to_tokens(tokens).to(model_device(model))  # type: ignore[operator]
    else:
        raise TypeError(f"Expected a token tensor or text, got {type(tokens).__name__}.")
    if out.numel() == 0:
        raise ValueError(f"Empty batch of tokens (shape {list(out.shape)}): give at least one prompt of one token.")
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    low, high = int(out.min()), int(out.max())
    if low < 0 or (isinstance(d_vocab, int) and d_vocab > 0 and high >= d_vocab):
        raise ValueError(f"Token ids must be in [0, d_vocab={d_vocab}), got ids from {low} to {high}.")
    return out


def check_same_shape(clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"Clean and corrupted tokens must have the same shape (positions are compared one to "
            f"one), got {list(clean.shape)} and {list(corrupted.shape)}."
        )



# ------------------------------------------------------------------------ metric and nodes
def resolve_metric(
    metric: Metric | None,
    answer_tokens: Int[torch.Tensor, "batch 2"] | Sequence[int] | None,
    answer_positions: Int[torch.Tensor, " batch"] | int,
) -> Metric:
    """``metric`` if given (must be callable), else the logit difference of ``answer_tokens``."""
    if metric is not None:
        if not callable(metric):
            raise TypeError(f"metric must be callable (logits -> scalar), got {type(metric).__name__}.")
        return metric
    if answer_tokens is None:
        raise ValueError(
            "Give a metric (logits -> scalar) or answer_tokens ([batch, 2]: correct, wrong) for the "
            "default logit-difference metric."
        )
    return logit_diff_metric(answer_tokens, answer_positions)


def node_names(att: Attachment, hooks: Sequence[str], include_error: bool) -> dict[str, tuple[str, str | None]]:
    """``{hook_key: (feature hook name, error hook name | None)}`` of the attribution nodes."""
    if include_error and not att.error_term:
        raise ValueError(
            "Attribution to error nodes needs the SAEs attached with error_term=True "
            "(gba_lens.attach(model, saes, error_term=True)), or pass include_error=False."
        )
    out = {}
    for h in hooks:
        key = hook_key(att, h)
        out[key] = (att.feature_hook_name(key), att.error_hook_name(key) if include_error else None)
    return out

