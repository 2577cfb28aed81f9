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


from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Int
from sae_lens import SAE
from tqdm.auto import tqdm

from gba_lens.adapters import Attachment
from gba_lens.circuits.attribution_result import TABLE_COLUMNS, AttributionResult, nodes_of  # noqa: F401 - re-exported
from gba_lens.circuits.chunking import chunks, n_chunks
from gba_lens.circuits.forward import capture, logits_of, replace_hook, scalar_metric, temporary_hooks
from gba_lens.circuits.inputs import attached, check_same_shape, node_names, resolve_metric, to_tokens
from gba_lens.circuits.patching import exact_patching, verify_attribution
from gba_lens.circuits.replicated import replicates_per_pass
from gba_lens.circuits.types import Metric, ModelOrAttachment, Node, TokensLike
from gba_lens.circuits.wandb_logging import WandbLogger, log_result

__all__ = [
    "AttributionResult",
    "Node",
    "attribute",
    "exact_patching",
    "nodes_of",
    "verify_attribution",
]


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
    metric_fn = resolve_metric(metric, answer_tokens, answer_positions)
    start = time.perf_counter()
    with attached(model, saes) as att:
        clean = to_tokens(att.model, clean_tokens)
        corrupt = to_tokens(att.model, corrupted_tokens)
        check_same_shape(clean, corrupt)
        names = node_names(att, hooks if hooks is not None else list(att.saes), include_error)
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
                ends = [(fname, replace_hook(corr[fname]))] + ([(ename, replace_hook(corr[ename]))] if ename else [])
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
        hooks = [(fname, replace_hook(leaves[0]))]
        if ename is not None:
            assert e0 is not None and e1 is not None
            leaves.append(interp(e0, e1))
            hooks.append((ename, replace_hook(leaves[1])))
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
    for h in result.hooks:
        try:
            figures[f"heatmap/{h}"] = result.heatmap(h)
        except Exception as exc:  # noqa: BLE001 - a missing plot must not stop the logging
            warnings.warn(f"attribution heatmap of {h!r} not logged: {exc!r}", UserWarning, stacklevel=3)
    scalars = dict(metric_clean=result.metric_clean, metric_corrupted=result.metric_corrupted, total_score=result.total(),
                   seconds=result.seconds)
    for h, v in result.patched_metric.items():
        scalars[f"completeness_error/{h}"] = result.completeness_error(h)
        scalars[f"patched_metric/{h}"] = v
    log_result(logger, f"attribution_{result.method}", result.config, table=result.top(50), scalars=scalars, figures=figures)

