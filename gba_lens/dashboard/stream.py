"""The collection pass: run the model with the SAE attached and feed :class:`FeatureStats`.

The SAE is spliced in with :func:`gba_lens.attach` (``error_term=True``, so the model computes
what it computes without the SAE) and a hook on its ``hook_sae_acts_post`` point hands each
batch's feature activations to the statistics; nothing of the batch is kept afterwards. Once
the statistics have the activations, the hook ends the forward pass (a private exception, caught
here; TransformerLens removes its hooks in a ``finally``): nothing later is needed, neither the
decoder nor the rest of the model. That also skips the second, hook-free SAE pass the splice
runs for its error term whenever a hook sits on the SAE (identical output, but not needed here).
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import nn
from tqdm.auto import tqdm

from gba_lens.adapters import Attachment, attach
from gba_lens.adapters.hooks import model_device, resolve_hook_points
from gba_lens.dashboard.collect import FeatureStats

__all__ = ["TokensLike", "token_batches", "collect", "excluded_token_ids"]


class _Collected(Exception):
    """Raised by the collection hook to end a forward pass once the features are collected."""

#: A ``[rows, pos]`` tensor / array, a ``datasets`` dataset with a ``tokens`` or ``input_ids``
#: column, or any iterable of token rows.
TokensLike = Any


def _rows_of(tokens: TokensLike) -> Iterator[Sequence[int] | torch.Tensor | np.ndarray]:
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(tokens)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2:
            raise ValueError(f"tokens must be [rows, pos], got shape {list(t.shape)}")
        yield from t
        return
    column = None
    names = getattr(tokens, "column_names", None)
    if names is not None:
        column = next((c for c in ("tokens", "input_ids") if c in names), None)
        if column is None:
            raise ValueError(f"the dataset needs a 'tokens' or 'input_ids' column, has {names}")
    for row in tokens:
        yield row[column] if column is not None else row


def token_batches(
    tokens: TokensLike, batch_size: int, max_tokens: int | None = None
) -> Iterator[Int[torch.Tensor, "batch pos"]]:
    """``[batch, pos]`` int64 batches of equal-length rows, up to ``max_tokens`` tokens."""
    buf: list[torch.Tensor] = []
    seen = 0
    for row in _rows_of(tokens):
        row = torch.as_tensor(np.asarray(row) if not isinstance(row, torch.Tensor) else row).long().flatten()
        if max_tokens is not None and seen + len(row) > max_tokens:
            row = row[: max_tokens - seen]
        if len(row) == 0:
            break
        if buf and len(row) != len(buf[0]):
            yield torch.stack(buf)
            buf = []
        buf.append(row)
        seen += len(row)
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
        if max_tokens is not None and seen >= max_tokens:
            break
    if buf:
        yield torch.stack(buf)


def excluded_token_ids(model: nn.Module) -> list[int]:
    """BOS / EOS / pad ids of the model's tokenizer: positions holding them are not counted
    (they often carry outlier activations that say nothing about a feature)."""
    tok = getattr(model, "tokenizer", None)
    ids = {getattr(tok, a, None) for a in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return sorted(int(i) for i in ids if i is not None)


def _stop_layer(model: nn.Module, hook: str) -> int | None:
    from transformer_lens import HookedTransformer

    match = re.match(r"blocks\.(\d+)\.", hook)
    if isinstance(model, HookedTransformer) and match:
        return int(match.group(1)) + 1
    return None


@torch.no_grad()
def collect(
    model: nn.Module,
    sae: Any,
    hook: str,
    tokens: TokensLike,
    *,
    batch_size: int = 32,
    max_tokens: int | None = None,
    exclude_tokens: Iterable[int] | None = None,
    progress: bool = True,
    **stats_kwargs: Any,
) -> FeatureStats:
    """One pass over ``tokens`` with ``sae`` attached at ``hook``; returns the statistics.

    Args:
        model: a TransformerLens model (``HookedTransformer`` or ``TransformerBridge``).
        sae: any ``sae_lens.SAE``, not attached elsewhere.
        hook: the hook point the SAE reads (a key of ``model.hook_dict``).
        tokens: see :data:`TokensLike`.
        batch_size: rows per forward pass.
        max_tokens: stop after this many tokens (None: all of ``tokens``).
        exclude_tokens: token ids whose positions are not counted (default:
            :func:`excluded_token_ids`); pass ``()`` to count everything.
        stats_kwargs: passed to :class:`FeatureStats` (``top_k``, ``n_bands``, ...).

    Raises:
        ValueError: an empty dataset, or (from :func:`gba_lens.attach`) an unknown hook, with
            close names, or an SAE whose ``d_in`` does not match the hook's width.
    """
    resolve_hook_points(model, [hook])  # unknown hook: one line with close matches
    attachment = sae if isinstance(sae, Attachment) else None
    if attachment is not None:  # an SAE already spliced in: read it where it is
        if not attachment.attached:
            raise ValueError("the attachment is no longer attached: pass its SAE, or attach it again")
        try:
            sae = attachment.splice(hook).sae
        except KeyError:
            raise ValueError(f"the attachment has no SAE at {hook!r}; it has {attachment.hook_names}") from None
    batches = token_batches(tokens, batch_size, max_tokens)
    first = next(batches, None)
    if first is None or first.numel() == 0:
        raise ValueError("the dataset is empty: no tokens to collect feature statistics over")
    device = model_device(model)
    excluded = torch.tensor(
        sorted(excluded_token_ids(model) if exclude_tokens is None else set(exclude_tokens)),
        dtype=torch.long, device=device,
    )
    stats = FeatureStats(int(sae.cfg.d_sae), device=device, **stats_kwargs)
    stop = _stop_layer(model, hook)
    total = max_tokens
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        total = min(int(np.prod(tokens.shape)), max_tokens or int(np.prod(tokens.shape)))
    bar = tqdm(total=total, unit="tok", desc="dashboard: collecting", disable=not progress)

    with nullcontext(attachment) if attachment is not None else attach(model, {hook: sae}, error_term=True) as att:
        name = att.feature_hook_name(hook)
        current: dict[str, torch.Tensor] = {}

        def feed(acts: torch.Tensor, hook: Any = None) -> None:  # noqa: ARG001
            toks = current["tokens"]
            mask = ~torch.isin(toks, excluded) if len(excluded) else None
            stats.update(acts.reshape(*toks.shape, -1), toks, mask)
            raise _Collected

        def run(batch: torch.Tensor) -> None:
            current["tokens"] = batch.to(device)
            kwargs = {"stop_at_layer": stop} if stop is not None else {}
            try:
                model.run_with_hooks(current["tokens"], fwd_hooks=[(name, feed)], **kwargs)
            except _Collected:
                pass
            else:
                raise RuntimeError(f"the SAE's feature hook {name!r} did not fire during the forward pass")
            bar.update(batch.numel())

        run(first)
        for batch in batches:
            run(batch)
    bar.close()
    return stats
