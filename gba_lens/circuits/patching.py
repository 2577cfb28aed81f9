"""Exact activation patching of single SAE nodes, and the check of attribution estimates.

:func:`exact_patching` patches each node (a feature or the error at a hook, at one or every
position) alone to its corrupted value in the clean run and measures the metric, batching many
nodes per forward pass with the replicated-run engine (:mod:`gba_lens.circuits.replicated`).
:func:`verify_attribution` compares an attribution's top-k estimates with it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Int
from sae_lens import SAE

from gba_lens.circuits.attribution_result import AttributionResult, nodes_of
from gba_lens.circuits.chunking import progress_chunks
from gba_lens.circuits.forward import capture, logits_of, scalar_metric
from gba_lens.circuits.inputs import (
    attached,
    check_same_shape,
    d_sae_of,
    feature_id,
    hook_key,
    node_names,
    resolve_metric,
    to_tokens,
)
from gba_lens.circuits.replicated import NodeEdit, replicates_per_pass, run_replicated
from gba_lens.circuits.statistics import pearson, spearman
from gba_lens.circuits.types import Metric, ModelOrAttachment, Node, TokensLike
from gba_lens.circuits.wandb_logging import WandbLogger, log_result

__all__ = ["exact_patching", "verify_attribution"]


def exact_patching(
    model: ModelOrAttachment,
    clean_tokens: TokensLike,
    corrupted_tokens: TokensLike,
    nodes: Sequence[Node] | Any,
    metric: Metric | None = None,
    *,
    answer_tokens: Int[torch.Tensor, "batch 2"] | Sequence[int] | None = None,
    answer_positions: Int[torch.Tensor, " batch"] | int = -1,
    batch_size: int | None = None,
    saes: Mapping[str, SAE[Any]] | None = None,
    progress: bool = True,
) -> Any:
    """Patch each node (alone) to its corrupted value in the clean run; measure the metric.

    Args:
        nodes: ``(hook, feature | None, position | None)`` triples (``None`` feature: the error
            node; ``None`` position: every position), or a table from
            :meth:`AttributionResult.table`.
        batch_size: nodes per forward pass (each node is one edited copy of the batch).

    Returns:
        A pandas DataFrame ``hook, node, feature, position, exact`` (``exact`` = patched metric
        minus clean metric), in the order of ``nodes``; ``attrs`` has ``metric_clean``.
    """
    import pandas as pd

    node_list = nodes_of(nodes) if hasattr(nodes, "itertuples") else [tuple(n) for n in nodes]
    metric_fn = resolve_metric(metric, answer_tokens, answer_positions)
    with attached(model, saes) as att:
        clean = to_tokens(att.model, clean_tokens)
        corrupt = to_tokens(att.model, corrupted_tokens)
        check_same_shape(clean, corrupt)
        batch, n_pos = clean.shape
        if not node_list:
            raise ValueError("No nodes given: pass at least one (hook, feature | None, position | None).")
        node_list = [_checked_node(att, node, n_pos) for node in node_list]
        need_error = any(f is None for _, f, _ in node_list)
        hooks = list(dict.fromkeys(hook_key(att, h) for h, _, _ in node_list))
        names = node_names(att, hooks, need_error)
        flat = [n for pair in names.values() for n in pair if n is not None]
        _, corr = capture(att.model, corrupt, flat)
        with torch.no_grad():
            metric_clean = float(scalar_metric(metric_fn, logits_of(att.model(clean))))
        per_pass = replicates_per_pass(clean, batch_size)
        exact: list[float] = []
        iterator = progress_chunks(len(node_list), per_pass, "exact patching", progress)
        for lo, hi in iterator:
            chunk = node_list[lo:hi]
            edits = []
            groups: dict[tuple[str, bool], list[int]] = {}
            for i, (h, f, _) in enumerate(chunk):
                groups.setdefault((hook_key(att, h), f is None), []).append(i)
            for (key, is_error), reps in groups.items():
                masks = torch.zeros(len(reps), batch, n_pos, dtype=torch.bool, device=clean.device)
                for j, i in enumerate(reps):
                    p = chunk[i][2]
                    if p is None:
                        masks[j] = True
                    else:
                        if not -n_pos <= p < n_pos:
                            raise ValueError(f"Position {p} out of range for {n_pos} positions.")
                        masks[j, :, p] = True
                rep = torch.tensor(reps, dtype=torch.long)
                fname, ename = names[key]
                if is_error:
                    assert ename is not None
                    vals = corr[ename][None].expand(len(reps), *corr[ename].shape)
                    edits.append(NodeEdit(ename, rep, None, masks, vals))
                else:
                    feats = torch.tensor([int(chunk[i][1]) for i in reps], dtype=torch.long)  # type: ignore[arg-type]
                    vals = corr[fname][..., feats.to(clean.device)].permute(2, 0, 1)
                    edits.append(NodeEdit(fname, rep, feats, masks, vals))
            exact.extend((run_replicated(att.model, clean, len(chunk), edits, metric_fn) - metric_clean).tolist())
    df = pd.DataFrame(
        {
            "hook": [h for h, _, _ in node_list],
            "node": ["error" if f is None else "feature" for _, f, _ in node_list],
            "feature": [-1 if f is None else int(f) for _, f, _ in node_list],
            "position": [-1 if p is None else int(p) for _, _, p in node_list],
            "exact": exact,
        }
    )
    df.attrs["metric_clean"] = metric_clean
    return df


def _checked_node(att: Any, node: Node, n_pos: int) -> Node:
    """``(hook, feature | None, position | None)`` with the feature and position validated."""
    if len(node) != 3:
        raise ValueError(f"A node is (hook, feature | None, position | None), got {node!r}.")
    hook, feature, position = node
    key = hook_key(att, hook)
    if feature is not None:
        feature = feature_id(feature, key, d_sae_of(att, key))
    if position is not None:
        try:
            position = None if isinstance(position, bool) else operator.index(position)
        except TypeError:
            position = None
        if position is None or not -n_pos <= position < n_pos:
            raise ValueError(f"The position of node {node!r} is not an int in [-{n_pos}, {n_pos}).")
    return (hook, feature, position)


def verify_attribution(
    model: ModelOrAttachment,
    clean_tokens: TokensLike,
    corrupted_tokens: TokensLike,
    result: AttributionResult,
    metric: Metric | None = None,
    k: int = 20,
    *,
    answer_tokens: Int[torch.Tensor, "batch 2"] | Sequence[int] | None = None,
    answer_positions: Int[torch.Tensor, " batch"] | int = -1,
    by: Literal["abs", "neg", "pos"] = "abs",
    include_error: bool = True,
    per_position: bool = True,
    batch_size: int | None = None,
    saes: Mapping[str, SAE[Any]] | None = None,
    logger: WandbLogger | bool | None = None,
    progress: bool = True,
) -> Any:
    """Check the top-``k`` attribution estimates against exact patching of those nodes.

    Returns:
        A pandas DataFrame ``hook, node, feature, position, estimate, exact`` with ``attrs``
        ``spearman`` and ``pearson`` (correlation of estimate and exact over the rows),
        ``sign_agreement`` (fraction of rows with the same sign) and ``metric_clean``.
    """
    top = result.table(k=k, by=by, include_error=include_error, per_position=per_position)
    ex = exact_patching(model, clean_tokens, corrupted_tokens, top, metric, answer_tokens=answer_tokens,
                        answer_positions=answer_positions, batch_size=batch_size, saes=saes, progress=progress)
    df = top[["hook", "node", "feature", "position"]].copy()
    if "token" in top:
        df["token"] = top["token"]
    df["estimate"] = top["score"].to_numpy()
    df["exact"] = ex["exact"].to_numpy()
    est = torch.tensor(df["estimate"].to_numpy())
    exa = torch.tensor(df["exact"].to_numpy())
    df.attrs.update(
        spearman=spearman(est, exa) if len(df) > 1 else float("nan"),
        pearson=pearson(est, exa) if len(df) > 1 else float("nan"),
        sign_agreement=float(((est > 0) == (exa > 0)).double().mean()) if len(df) else float("nan"),
        metric_clean=ex.attrs["metric_clean"],
        method=result.method,
    )
    log_result(logger, f"verify_attribution_{result.method}", dict(k=k, by=by, include_error=include_error, per_position=per_position),
               table=df, scalars={key: df.attrs[key] for key in ("spearman", "pearson", "sign_agreement") if not math.isnan(df.attrs[key])})
    return df

