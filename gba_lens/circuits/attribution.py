"""Attribution patching (AtP) and integrated gradients over SAE features and error nodes.

Nodes are the SAE feature activations (``{hook}.hook_sae_acts_post``, one node per feature and
position) and the SAE error (``{hook}.hook_sae_error``, one node per position: the whole error
vector) at one or several hooks; the SAEs must be attached with ``error_term=True`` (a model
and ``saes`` passed directly are attached that way). For a scalar metric ``m`` of the logits
(default: the logit difference between two answer tokens) and clean vs corrupted prompts of the
same shape:

* ``method="atp"`` (Nanda 2023; Syed et al. 2023; Marks et al. 2024):
  ``score = (a_corrupt - a_clean) * dm/da |clean``, summed over prompts. One forward pass per
  prompt set (the corrupted one without gradient) and one backward pass: the cost of the whole
  table is about three forward passes whatever the number of features.
* ``method="ig"``: integrated gradients along the straight path from clean to corrupted node
  values, with all nodes *at one hook* (features and error, i.e. a complete cut of that hook)
  interpolated together and everything downstream recomputed: ``score = (a_corrupt - a_clean)
  * mean_k dm/da(alpha_k)`` with midpoint steps ``alpha_k = (k + 1/2) / N``. The steps are
  batched. Completeness: per hook, the scores sum to ``m(nodes at the hook patched to corrupted)
  - m(clean)``, which for a residual-stream hook is ``m(corrupt) - m(clean)``.
  Each hook is integrated separately (interpolating two hooks at once would cut the path of
  the upstream one through the downstream one).

A score estimates the metric's change when that node (in every prompt) takes its corrupted value
in the clean run. :func:`exact_patching` measures exactly that, batched, and
:func:`verify_attribution` compares the top-k estimates with it (rank correlation).

Gradients reach both feature and error nodes and upstream nodes through downstream SAEs because
:class:`gba_lens.adapters.SAESplice` keeps the error term in the autograd graph. TransformerLens's
``patching`` / ``attribution_patch`` tools work on model nodes only, hence this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from jaxtyping import Int
from sae_lens import SAE
from tqdm.auto import tqdm

from gba_lens.adapters import Attachment
from gba_lens.circuits._core import (
    HookFn,
    Metric,
    ModelOrAttachment,
    NodeEdit,
    TokensLike,
    attached,
    capture,
    check_same_shape,
    chunks,
    hook_key,
    logits_of,
    n_chunks,
    progress_chunks,
    pearson,
    replicates_per_pass,
    run_replicated,
    scalar_metric,
    spearman,
    temporary_hooks,
    to_tokens,
)
from gba_lens.circuits.metrics import logit_diff_metric
from gba_lens.circuits.wandb_logging import WandbLogger, log_result

__all__ = [
    "AttributionResult",
    "Node",
    "attribute",
    "exact_patching",
    "verify_attribution",
]

#: A node: ``(hook, feature, position)``; ``feature=None`` is the error node, ``position=None``
#: all positions at once.
Node = tuple[str, Optional[int], Optional[int]]

TABLE_COLUMNS = ["hook", "node", "feature", "position", "score"]


@dataclass
class AttributionResult:
    """Scores of every feature and error node; see :func:`attribute`.

    Attributes:
        feature_scores: ``{hook: [pos, d_sae]}`` score of each feature at each position (summed
            over prompts).
        error_scores: ``{hook: [pos]}`` score of the error node at each position.
        metric_clean / metric_corrupted: the metric on the clean / corrupted prompts.
        method: ``"atp"`` or ``"ig"``; ``ig_steps``: number of IG steps.
        patched_metric: IG only: ``{hook: metric with every node at the hook patched}``.
        position_labels: optional labels of the positions (e.g. tokens of the first prompt).
    """

    feature_scores: dict[str, torch.Tensor]
    error_scores: dict[str, torch.Tensor]
    metric_clean: float
    metric_corrupted: float
    method: str
    n_prompts: int
    ig_steps: int | None = None
    patched_metric: dict[str, float] = field(default_factory=dict)
    position_labels: list[str] | None = None
    seconds: float = 0.0
    n_forward: int = 0
    n_backward: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def hooks(self) -> list[str]:
        return list(self.feature_scores)

    @property
    def metric_delta(self) -> float:
        """``metric_corrupted - metric_clean``."""
        return self.metric_corrupted - self.metric_clean

    def total(self, hook: str | None = None, include_error: bool = True) -> float:
        """Sum of the scores at ``hook`` (or every hook)."""
        hooks = [hook] if hook is not None else self.hooks
        s = 0.0
        for h in hooks:
            s += float(self.feature_scores[h].double().sum())
            if include_error and h in self.error_scores:
                s += float(self.error_scores[h].double().sum())
        return s

    def completeness_error(self, hook: str) -> float:
        """IG: ``|sum of scores - (patched - clean)| / |patched - clean|`` at ``hook``."""
        if hook not in self.patched_metric:
            raise ValueError("completeness_error needs an IG result (method='ig').")
        target = self.patched_metric[hook] - self.metric_clean
        return abs(self.total(hook) - target) / max(abs(target), 1e-12)

    def feature_totals(self, hook: str) -> torch.Tensor:
        """``[d_sae]`` scores summed over positions (the estimate for patching every position)."""
        return self.feature_scores[hook].sum(0)

    def table(
        self,
        k: int | None = None,
        by: Literal["abs", "neg", "pos"] = "abs",
        include_error: bool = True,
        per_position: bool = True,
        hooks: Sequence[str] | None = None,
    ) -> Any:
        """A pandas DataFrame of nodes (``hook, node, feature, position, score``), top ``k``.

        ``node`` is ``"feature"`` or ``"error"`` (``feature = -1``); with ``per_position=False``
        scores are summed over positions (``position = -1``). ``by``: rank by ``|score|``, most
        negative first, or most positive first. Zero scores are dropped.
        """
        import pandas as pd

        if by not in ("abs", "neg", "pos"):
            raise ValueError(f"by must be 'abs', 'neg' or 'pos', got {by!r}.")
        parts: list[tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for h in hooks or self.hooks:
            fs = self.feature_scores[h]
            if per_position:
                pos, feat = torch.meshgrid(torch.arange(fs.shape[0]), torch.arange(fs.shape[1]), indexing="ij")
                parts.append((h, "feature", feat.flatten(), pos.flatten(), fs.flatten()))
            else:
                parts.append((h, "feature", torch.arange(fs.shape[1]), torch.full((fs.shape[1],), -1), fs.sum(0)))
            if include_error and h in self.error_scores:
                es = self.error_scores[h]
                if per_position:
                    parts.append((h, "error", torch.full((len(es),), -1), torch.arange(len(es)), es))
                else:
                    parts.append((h, "error", torch.tensor([-1]), torch.tensor([-1]), es.sum()[None]))
        frames = []
        for h, kind, feat, pos, score in parts:
            score = score.double().cpu()
            key = {"abs": -score.abs(), "neg": score, "pos": -score}[by]
            keep = score != 0
            idx = torch.nonzero(keep).flatten()
            if k is not None and len(idx) > k:
                idx = idx[torch.topk(-key[idx], k).indices]
            frames.append(
                pd.DataFrame(
                    {"hook": h, "node": kind, "feature": feat[idx].long().numpy(), "position": pos[idx].long().numpy(),
                     "score": score[idx].numpy()}
                )
            )
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TABLE_COLUMNS)
        if len(df):
            key = {"abs": -df["score"].abs(), "neg": df["score"], "pos": -df["score"]}[by]
            df = df.loc[key.sort_values(kind="stable").index].reset_index(drop=True)
        if k is not None:
            df = df.head(k).reset_index(drop=True)
        if self.position_labels is not None and len(df):
            labels = self.position_labels
            df["token"] = [labels[p] if 0 <= p < len(labels) else "" for p in df["position"]]
        return df

    def top(self, k: int = 20, **kwargs: Any) -> Any:
        """The ``k`` top nodes (see :meth:`table`)."""
        return self.table(k=k, **kwargs)

    def nodes(self, k: int = 20, **kwargs: Any) -> list[Node]:
        """The ``k`` top nodes as ``(hook, feature | None, position | None)``."""
        return nodes_of(self.table(k=k, **kwargs))

    def heatmap(self, hook: str | None = None, k: int = 20, **kwargs: Any) -> Any:
        """Matplotlib heatmap of the top-``k`` features (and the error node) over positions."""
        from gba_lens.circuits.plotting import plot_attribution_heatmap

        return plot_attribution_heatmap(self, hook=hook, k=k, **kwargs)


def nodes_of(table: Any) -> list[Node]:
    """``(hook, feature | None, position | None)`` for each row of an attribution table."""
    out: list[Node] = []
    for row in table.itertuples(index=False):
        feat = None if row.node == "error" else int(row.feature)
        pos = None if int(row.position) < 0 else int(row.position)
        out.append((str(row.hook), feat, pos))
    return out


# ---------------------------------------------------------------------------------- helpers
def _resolve_metric(
    metric: Metric | None,
    answer_tokens: Int[torch.Tensor, "batch 2"] | Sequence[int] | None,
    answer_positions: Int[torch.Tensor, " batch"] | int,
) -> Metric:
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


def _node_names(att: Attachment, hooks: Sequence[str], include_error: bool) -> dict[str, tuple[str, str | None]]:
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


def _replace_hook(value: torch.Tensor) -> HookFn:
    def hook(t: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG001
        if t.shape != value.shape:
            raise RuntimeError(f"Replacement of shape {list(value.shape)} for an activation of shape {list(t.shape)}.")
        return value

    return hook


# -------------------------------------------------------------------------------- attribute
def attribute(
    model: ModelOrAttachment,
    clean_tokens: TokensLike,
    corrupted_tokens: TokensLike,
    metric: Metric | None = None,
    *,
    answer_tokens: Int[torch.Tensor, "batch 2"] | Sequence[int] | None = None,
    answer_positions: Int[torch.Tensor, " batch"] | int = -1,
    hooks: Sequence[str] | None = None,
    method: Literal["atp", "ig"] = "atp",
    ig_steps: int = 32,
    include_error: bool = True,
    batch_size: int | None = None,
    saes: Mapping[str, SAE[Any]] | None = None,
    position_labels: Sequence[str] | None = None,
    logger: WandbLogger | bool | None = None,
    progress: bool = True,
) -> AttributionResult:
    """Attribute ``metric(corrupt) - metric(clean)`` to SAE features and error nodes.

    Args:
        model: an :class:`~gba_lens.adapters.Attachment` with ``error_term=True``, or a model with
            ``saes`` (attached with the error term for the call).
        clean_tokens, corrupted_tokens: ``[batch, pos]`` prompts of the same shape.
        metric: ``logits -> scalar`` (differentiable). Default: mean logit difference
            ``logit(answer_tokens[:, 0]) - logit(answer_tokens[:, 1])`` at ``answer_positions``.
            For IOI: ``lambda logits: mean_logit_diff(logits, prompt_set)``.
        hooks: which attached hooks (default all).
        method: ``"atp"`` (gradient x difference, one backward) or ``"ig"`` (integrated
            gradients, ``ig_steps`` batched steps per hook).
        include_error: also score the error nodes (default True).
        batch_size: IG steps per forward pass (default: as many as fit in 2,048 positions).
        position_labels: labels of the positions, copied to the table's ``token`` column.
        logger: W&B logging (config, top-50 table, one heatmap per hook).

    Returns:
        An :class:`AttributionResult` (``.table()``, ``.top(k)``, ``.heatmap()``...).
    """
    if method not in ("atp", "ig"):
        raise ValueError(f"method must be 'atp' or 'ig', got {method!r}.")
    if method == "ig" and (not isinstance(ig_steps, int) or ig_steps < 1):
        raise ValueError(f"ig_steps must be a positive int, got {ig_steps!r}.")
    metric_fn = _resolve_metric(metric, answer_tokens, answer_positions)
    start = time.perf_counter()
    with attached(model, saes) as att:
        clean = to_tokens(att.model, clean_tokens)
        corrupt = to_tokens(att.model, corrupted_tokens)
        check_same_shape(clean, corrupt)
        names = _node_names(att, hooks if hooks is not None else list(att.saes), include_error)
        flat = [n for pair in names.values() for n in pair if n is not None]
        corr_logits, corr = capture(att.model, corrupt, flat)
        metric_corrupt = float(scalar_metric(metric_fn, corr_logits))
        feature_scores: dict[str, torch.Tensor] = {}
        error_scores: dict[str, torch.Tensor] = {}
        patched: dict[str, float] = {}
        if method == "atp":
            clean_logits, cache = capture(att.model, clean, flat, keep_graph=True)
            m = scalar_metric(metric_fn, clean_logits)
            metric_clean = float(m.detach())
            grads = torch.autograd.grad(m, [cache[n] for n in flat], allow_unused=True)
            grad_of = {n: (g if g is not None else torch.zeros_like(cache[n])) for n, g in zip(flat, grads)}
            for key, (fname, ename) in names.items():
                feature_scores[key] = ((corr[fname] - cache[fname].detach()) * grad_of[fname]).sum(0).detach().float().cpu()
                if ename is not None:
                    diff = (corr[ename] - cache[ename].detach()) * grad_of[ename]
                    error_scores[key] = diff.sum(0).flatten(1).sum(-1).detach().float().cpu()
            n_forward, n_backward = 2, 1
        else:
            clean_logits, cache = capture(att.model, clean, flat)
            metric_clean = float(scalar_metric(metric_fn, clean_logits))
            n_forward, n_backward = 2, 0
            per_pass = replicates_per_pass(clean, batch_size)
            total = n_chunks(ig_steps, per_pass) * len(names)
            bar = tqdm(total=total, desc="integrated gradients", leave=False) if progress else None
            for key, (fname, ename) in names.items():
                f_scores, e_scores, fwd = _integrated_gradients(
                    att, clean, cache, corr, fname, ename, metric_fn, ig_steps, per_pass, bar
                )
                feature_scores[key] = f_scores
                if e_scores is not None:
                    error_scores[key] = e_scores
                # the end of the path, exactly: every node at the hook patched to corrupted
                ends = [(fname, _replace_hook(corr[fname]))] + ([(ename, _replace_hook(corr[ename]))] if ename else [])
                with torch.no_grad(), temporary_hooks(att.model, ends):
                    patched[key] = float(scalar_metric(metric_fn, logits_of(att.model(clean))))
                n_forward += fwd + 1
                n_backward += fwd
            if bar is not None:
                bar.close()
    labels = list(position_labels) if position_labels is not None else None
    if labels is not None and len(labels) != clean.shape[1]:
        raise ValueError(f"{len(labels)} position labels for {clean.shape[1]} positions.")
    config = dict(method=method, ig_steps=ig_steps if method == "ig" else None, hooks=list(names),
                  include_error=include_error, n_prompts=int(clean.shape[0]), n_positions=int(clean.shape[1]))
    result = AttributionResult(
        feature_scores=feature_scores, error_scores=error_scores, metric_clean=metric_clean,
        metric_corrupted=metric_corrupt, method=method, n_prompts=int(clean.shape[0]),
        ig_steps=ig_steps if method == "ig" else None, patched_metric=patched, position_labels=labels,
        seconds=time.perf_counter() - start, n_forward=n_forward, n_backward=n_backward, config=config,
    )
    if logger:
        _log_attribution(logger, result)
    return result


def _integrated_gradients(
    att: Attachment,
    clean: torch.Tensor,
    cache: dict[str, torch.Tensor],
    corr: dict[str, torch.Tensor],
    fname: str,
    ename: str | None,
    metric: Metric,
    steps: int,
    per_pass: int,
    bar: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """IG at one hook: interpolate its feature and error nodes together, batch the steps."""
    batch = clean.shape[0]
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    f0, f1 = cache[fname], corr[fname]
    grad_f = torch.zeros_like(f0, dtype=torch.float32)
    e0 = cache[ename] if ename else None
    e1 = corr[ename] if ename else None
    grad_e = torch.zeros_like(e0, dtype=torch.float32) if e0 is not None else None
    n_pass = 0
    for lo, hi in chunks(steps, per_pass):
        a = alphas[lo:hi].to(f0.device)
        r = len(a)

        def interp(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
            shape = (r,) + (1,) * x0.ndim
            v = x0[None] + a.to(x0.dtype).view(shape) * (x1 - x0)[None]
            return v.reshape(r * batch, *x0.shape[1:]).detach().requires_grad_(True)

        leaves = [interp(f0, f1)]
        hooks = [(fname, _replace_hook(leaves[0]))]
        if ename is not None:
            assert e0 is not None and e1 is not None
            leaves.append(interp(e0, e1))
            hooks.append((ename, _replace_hook(leaves[1])))
        with torch.enable_grad(), temporary_hooks(att.model, hooks):
            logits = logits_of(att.model(clean.repeat(r, 1)))
            total = sum(scalar_metric(metric, logits[i * batch : (i + 1) * batch]) for i in range(r))
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
        n_pass += 1
        g_f = grads[0] if grads[0] is not None else torch.zeros_like(leaves[0])
        grad_f += g_f.view(r, *f0.shape).sum(0).float()
        if grad_e is not None:
            g_e = grads[1] if grads[1] is not None else torch.zeros_like(leaves[1])
            grad_e += g_e.view(r, *e0.shape).sum(0).float()  # type: ignore[union-attr]
        if bar is not None:
            bar.update(1)
    f_scores = ((f1 - f0).float() * grad_f / steps).sum(0).cpu()
    e_scores = None
    if grad_e is not None:
        assert e0 is not None and e1 is not None
        e_scores = ((e1 - e0).float() * grad_e / steps).sum(0).flatten(1).sum(-1).cpu()
    return f_scores, e_scores, n_pass


def _log_attribution(logger: WandbLogger | bool, result: AttributionResult) -> None:
    figures = {}
    try:
        for h in result.hooks:
            figures[f"heatmap/{h}"] = result.heatmap(h)
    except Exception:  # noqa: BLE001 - plotting is optional for logging
        pass
    scalars = dict(metric_clean=result.metric_clean, metric_corrupted=result.metric_corrupted, total_score=result.total(),
                   seconds=result.seconds)
    for h, v in result.patched_metric.items():
        scalars[f"completeness_error/{h}"] = result.completeness_error(h)
        scalars[f"patched_metric/{h}"] = v
    log_result(logger, f"attribution_{result.method}", result.config, table=result.top(50), scalars=scalars, figures=figures)


# ---------------------------------------------------------------------------- exact patching
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
    metric_fn = _resolve_metric(metric, answer_tokens, answer_positions)
    with attached(model, saes) as att:
        clean = to_tokens(att.model, clean_tokens)
        corrupt = to_tokens(att.model, corrupted_tokens)
        check_same_shape(clean, corrupt)
        batch, n_pos = clean.shape
        need_error = any(f is None for _, f, _ in node_list)
        hooks = list(dict.fromkeys(hook_key(att, h) for h, _, _ in node_list))
        names = _node_names(att, hooks, need_error)
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
