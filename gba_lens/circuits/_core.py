"""Shared machinery of the circuit utilities (internal).

* :func:`attached` - accept an :class:`~gba_lens.adapters.Attachment` or a model plus
  ``{hook_name: sae}`` (attached for the duration of the call, with the error term);
* :func:`temporary_hooks` - add forward hooks to named hook points and always remove them;
* :func:`capture` - one forward pass recording SAE hook points (optionally keeping the graph);
* :class:`NodeEdit` / :func:`run_replicated` - run ``R`` edited copies of a batch in one forward
  pass (row ``r * batch + b`` is prompt ``b`` of replicate ``r``) and evaluate the metric per
  replicate. Sweeps, exact patching and integrated gradients are all built on this.

Everything works through what ``HookedTransformer``, ``HookedSAETransformer`` and
``TransformerBridge`` share (``hook_dict``, ``HookPoint.add_hook``, ``model(tokens)``,
``to_tokens``), like :mod:`gba_lens.adapters`. Hooks are added through
:func:`gba_lens.adapters.hooks.add_lens_hook` (not ``run_with_hooks``) because steering has to run
*before* the SAE splice at a hook point (``prepend=True``), which ``run_with_hooks`` cannot do, and
because ``TransformerBridge.run_with_hooks`` silently ignores unknown names.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import nn

from gba_lens.adapters import Attachment, attach
from gba_lens.adapters.hooks import (
    add_lens_hook,
    get_hook_dict,
    model_device,
    remove_lens_hook,
    unknown_hook_message,
)

#: A metric maps the model's logits ``[batch, pos, d_vocab]`` to a scalar tensor (a tensor with
#: more than one element is averaged). It must be differentiable for attribution.
Metric = Callable[[torch.Tensor], torch.Tensor]

#: Inputs: a token tensor ``[batch, pos]`` or text (converted with ``model.to_tokens``).
TokensLike = Union[Int[torch.Tensor, "batch pos"], str, Sequence[str]]

#: Positions: None (all), an int or a list of ints (the same positions in every prompt; negative
#: ints count from the end), a 1-D integer tensor of length ``batch`` (one position per prompt,
#: e.g. ``IOIPromptSet.end_pos``) or a boolean mask ``[batch, pos]``.
PositionsLike = Union[None, int, Sequence[int], Int[torch.Tensor, " batch"], Bool[torch.Tensor, "batch pos"]]

#: Features: an int or list of ints (when one SAE is attached), ``{hook: int | [ints]}``, or a
#: list of ``(hook, feature)`` pairs.
FeaturesLike = Union[int, Sequence[int], Mapping[str, Union[int, Sequence[int], torch.Tensor]], Sequence[tuple[str, int]]]

ModelOrAttachment = Union[Attachment, nn.Module]

# Default number of token positions per batched forward pass of the replicated runner (bounds the
# size of the logits tensor: 2,048 positions x 50,257 GPT-2 logits x 4 bytes = 0.4 GB).
DEFAULT_MAX_TOKENS = 2048


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
            raise ValueError("This Attachment has been detached; attach the SAEs again.")
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
def normalize_features(att: Attachment, features: FeaturesLike) -> dict[str, torch.Tensor]:
    """``{hook_key: LongTensor of distinct feature ids}`` (validated against each SAE's d_sae)."""
    out: dict[str, list[int]] = {}

    def add(hook: str, ids: Any) -> None:
        key = hook_key(att, hook)
        if isinstance(ids, torch.Tensor):
            if ids.dtype == torch.bool:
                ids = torch.nonzero(ids.flatten()).flatten()
            ids = ids.flatten().tolist()
        elif isinstance(ids, (int,)) or (hasattr(ids, "__index__") and not isinstance(ids, (str, bytes))):
            ids = [int(ids)]
        for f in ids:
            if isinstance(f, bool) or not isinstance(f, int):
                try:
                    f = int(f)
                except (TypeError, ValueError):
                    raise TypeError(f"Feature ids must be ints, got {f!r} for {hook!r}.") from None
            d_sae = d_sae_of(att, key)
            if not 0 <= f < d_sae:
                raise ValueError(f"Feature {f} is out of range for the SAE at {key!r} (d_sae={d_sae}).")
            out.setdefault(key, [])
            if f not in out[key]:
                out[key].append(f)

    if isinstance(features, Mapping):
        for hook, ids in features.items():
            add(hook, ids)
    elif isinstance(features, (int, torch.Tensor)) or hasattr(features, "__index__"):
        add(_single_hook(att), features)
    elif isinstance(features, Sequence) and not isinstance(features, str):
        items = list(features)
        if items and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in items):
            for hook, f in items:
                add(hook, f)
        else:
            add(_single_hook(att), items)
    else:
        raise TypeError(
            "features must be an int, a list of ints, {hook: ids} or a list of (hook, id) pairs; "
            f"got {type(features).__name__}."
        )
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items() if v}


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
    if isinstance(positions, int):
        positions = [positions]
    mask = torch.zeros(batch, n_pos, dtype=torch.bool, device=device)
    for p in positions:
        q = int(p) + n_pos if int(p) < 0 else int(p)
        if not 0 <= q < n_pos:
            raise ValueError(f"Position {p} out of range for sequences of {n_pos} tokens.")
        mask[:, q] = True
    return mask


# ------------------------------------------------------------------------------------ tokens
def to_tokens(model: nn.Module, tokens: TokensLike) -> Int[torch.Tensor, "batch pos"]:
    """A ``[batch, pos]`` long tensor on the model's device (text goes through ``to_tokens``)."""
    if isinstance(tokens, torch.Tensor):
        if tokens.dtype not in (torch.long, torch.int, torch.int32, torch.int16):
            raise TypeError(f"Token tensors must be integer, got {tokens.dtype}.")
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"Tokens must be [batch, pos], got shape {list(tokens.shape)}.")
        return tokens.to(model_device(model), dtype=torch.long)
    if isinstance(tokens, str) or (
        isinstance(tokens, Sequence) and tokens and all(isinstance(t, str) for t in tokens)
    ):
        if not hasattr(model, "to_tokens"):
            raise TypeError(f"{type(model).__name__} cannot tokenize text; pass token ids.")
        return model.to_tokens(tokens).to(model_device(model))  # type: ignore[operator]
    raise TypeError(f"Expected a token tensor or text, got {type(tokens).__name__}.")


def check_same_shape(clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"Clean and corrupted tokens must have the same shape (positions are compared one to "
            f"one), got {list(clean.shape)} and {list(corrupted.shape)}."
        )


# ------------------------------------------------------------------------------------ metrics
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


# -------------------------------------------------------------------------------------- hooks
HookFn = Callable[[torch.Tensor, Any], Union[torch.Tensor, None]]


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


# ----------------------------------------------------------------------- replicated edited runs
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


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


def n_chunks(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0


def progress_chunks(n: int, size: int, desc: str, progress: bool) -> Iterator[tuple[int, int]]:
    """``chunks(n, size)``, with a tqdm bar when ``progress``."""
    if not progress:
        return chunks(n, size)
    from tqdm.auto import tqdm

    return iter(tqdm(list(chunks(n, size)), total=n_chunks(n, size), desc=desc, leave=False))


def rank(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1..n) with ties averaged, as float64."""
    x = x.double().flatten()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    # average ties
    uniq, inverse = torch.unique(x, return_inverse=True)
    if len(uniq) < len(x):
        sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
        counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
        ranks = (sums / counts)[inverse]
    return ranks


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    if len(x) < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = xc.norm() * yc.norm()
    return float((xc @ yc) / denom) if denom > 0 else float("nan")


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation (Pearson correlation of the tie-averaged ranks)."""
    return pearson(rank(x), rank(y))


def as_float_tensor(x: Float[torch.Tensor, "..."] | float) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(float(x))
