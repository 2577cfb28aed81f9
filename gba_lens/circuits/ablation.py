"""Feature ablation: zero, mean and resample ablation of chosen SAE features.

The SAEs are spliced in by :func:`gba_lens.attach` with ``error_term=True``: the activation
downstream of a hook is ``decode(features) + error`` where the error is computed from the clean
(un-intervened) pass. Editing feature activations at ``{hook}.hook_sae_acts_post`` therefore
removes exactly the chosen features' decoder contribution and leaves everything else - including
the reconstruction error - in place. (SAELens issue #326 is the trap this avoids: with an error
term recomputed from the *edited* reconstruction, or with no error term, an ablation either does
nothing or also removes the SAE's error.) With nothing ablated the output equals the attached
model's exactly (and the clean model's up to floating-point rounding).

* :func:`ablate_features` - ablate a set of features (one or several hooks) and return the
  metric's change;
* :func:`ablation_sweep` - ablate many features one at a time, batched (``R`` edited copies of
  the prompt batch per forward pass), and return a table;
* :func:`ablation_hooks` - ``(hook_name, fn)`` pairs for ``model.hooks(fwd_hooks=...)`` /
  ``run_with_hooks`` to run anything with the ablation on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from sae_lens import SAE

from gba_lens.adapters import Attachment
from gba_lens.circuits.chunking import progress_chunks
from gba_lens.circuits.forward import capture, logits_of, scalar_metric, temporary_hooks
from gba_lens.circuits.inputs import (
    attached,
    d_sae_of,
    normalize_features,
    position_mask,
    to_tokens,
    warn_if_no_error_term,
)
from gba_lens.circuits.replicated import NodeEdit, replicates_per_pass, run_replicated
from gba_lens.circuits.types import FeaturesLike, HookFn, Metric, ModelOrAttachment, PositionsLike, TokensLike
from gba_lens.circuits.wandb_logging import WandbLogger, log_result

__all__ = [
    "AblationMode",
    "AblationResult",
    "ablate_features",
    "ablation_sweep",
    "ablation_hooks",
    "ablation_sources",
]

AblationMode = Literal["zero", "mean", "resample"]
_MODES = ("zero", "mean", "resample")


@dataclass
class AblationResult:
    """Outcome of :func:`ablate_features`.

    Attributes:
        metric_clean: the metric with the SAEs attached and nothing ablated (with the error term
            this is the clean model's metric).
        metric_ablated: the metric with the features ablated.
        delta: ``metric_ablated - metric_clean``.
        features: ``{hook: [feature ids]}`` that were ablated.
        mode: ``"zero"``, ``"mean"`` or ``"resample"``.
    """

    metric_clean: float
    metric_ablated: float
    features: dict[str, list[int]]
    mode: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> float:
        return self.metric_ablated - self.metric_clean

    @property
    def fraction_remaining(self) -> float:
        """``metric_ablated / metric_clean`` (NaN when the clean metric is 0)."""
        return self.metric_ablated / self.metric_clean if self.metric_clean else float("nan")


# ------------------------------------------------------------------------------ value sources
def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"Unknown ablation mode {mode!r}; choose one of {_MODES}.")


def ablation_sources(
    att: Attachment,
    hooks: Sequence[str],
    mode: AblationMode,
    tokens: torch.Tensor,
    reference_tokens: torch.Tensor | None = None,
    per_position_mean: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Replacement activations per hook, broadcastable to ``[batch, pos, d_sae]`` of ``tokens``.

    * ``zero``: zeros ``[d_sae]``.
    * ``mean``: the mean activation over the reference batch (``reference_tokens``, default
      ``tokens``) and its positions (``[d_sae]``), or per position (``[pos, d_sae]``) with
      ``per_position_mean=True`` (the reference must then have at least as many positions).
    * ``resample``: the activations of another prompt at the same position (``[batch, pos,
      d_sae]``): a random reference prompt per prompt (seeded), or, without ``reference_tokens``,
      a random permutation of the batch with no fixed point.
    """
    _check_mode(mode)
    model = att.model
    batch, n_pos = tokens.shape
    names = {h: att.feature_hook_name(h) for h in hooks}
    out: dict[str, torch.Tensor] = {}
    if mode == "zero":
        for h in hooks:
            sae = att.saes[h]
            out[h] = torch.zeros(d_sae_of(att, h), device=tokens.device, dtype=sae.W_dec.dtype)
        return out
    ref = tokens if reference_tokens is None else reference_tokens
    _, cache = capture(model, ref, list(names.values()))
    gen = torch.Generator().manual_seed(seed)
    for h, name in names.items():
        acts = cache[name]  # [R, P', F]
        if mode == "mean":
            if per_position_mean:
                if acts.shape[1] < n_pos:
                    raise ValueError(
                        f"per_position_mean needs reference prompts with >= {n_pos} positions, "
                        f"got {acts.shape[1]}."
                    )
                out[h] = acts.mean(0)[:n_pos]
            else:
                out[h] = acts.mean((0, 1))
        else:  # resample
            if acts.shape[1] < n_pos:
                raise ValueError(
                    f"Resample ablation needs reference prompts with >= {n_pos} positions, got "
                    f"{acts.shape[1]}."
                )
            if reference_tokens is None:
                if batch < 2:
                    raise ValueError("Resample ablation within the batch needs >= 2 prompts; pass reference_tokens.")
                # a random derangement: shift a random permutation by one
                perm = torch.randperm(batch, generator=gen)
                src = torch.empty(batch, dtype=torch.long)
                src[perm] = perm.roll(1)
            else:
                src = torch.randint(0, acts.shape[0], (batch,), generator=gen)
            out[h] = acts[src.to(acts.device), :n_pos]
    return out


def _values_for(src: torch.Tensor, features: torch.Tensor, batch: int, n_pos: int) -> torch.Tensor:
    """``[K, batch, pos]`` replacement values of ``features`` from a broadcastable source."""
    if src.ndim == 2:
        src = src[:n_pos]
    elif src.ndim == 3:
        if src.shape[0] != batch:
            raise ValueError(f"Resampled values are for a batch of {src.shape[0]}, the activations have {batch}.")
        src = src[:, :n_pos]
    full = src.expand(batch, n_pos, src.shape[-1]) if src.ndim < 3 else src
    return full[..., features.to(full.device)].permute(2, 0, 1)


def _feature_edit_hook(features: torch.Tensor, positions: PositionsLike, src: torch.Tensor) -> HookFn:
    """A forward hook on ``hook_sae_acts_post`` setting ``features`` to ``src`` at ``positions``."""

    def hook(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG001
        batch, n_pos = acts.shape[0], acts.shape[1]
        mask = position_mask(positions, batch, n_pos, acts.device)  # [B, P]
        feats = features.to(acts.device)
        vals = _values_for(src.to(acts.device), feats, batch, n_pos).permute(1, 2, 0)  # [B,P,K]
        out = acts.clone()
        out[..., feats] = torch.where(mask[..., None], vals.to(acts.dtype), acts[..., feats])
        return out

    return hook


def ablation_hooks(
    attachment: Attachment,
    features: FeaturesLike,
    mode: AblationMode = "zero",
    positions: PositionsLike = None,
    tokens: TokensLike | None = None,
    reference_tokens: TokensLike | None = None,
    per_position_mean: bool = False,
    seed: int = 0,
) -> list[tuple[str, HookFn]]:
    """``(hook_name, fn)`` pairs that ablate ``features`` while active.

    Use with ``model.hooks(fwd_hooks=...)`` or ``model.run_with_hooks(..., fwd_hooks=...)``
    on the attached model. ``mean`` needs ``reference_tokens`` (or ``tokens``); ``resample``
    needs ``tokens`` (the batch that will be run: it fixes which prompt each one borrows from).
    """
    feats = normalize_features(attachment, features)
    _check_mode(mode)
    if mode != "zero" and tokens is None and reference_tokens is None:
        raise ValueError(f"{mode} ablation needs tokens (and/or reference_tokens) to compute the values.")
    model = attachment.model
    base = to_tokens(model, tokens if tokens is not None else reference_tokens)  # type: ignore[arg-type]
    ref = None if reference_tokens is None else to_tokens(model, reference_tokens)
    sources = ablation_sources(attachment, list(feats), mode, base, ref, per_position_mean, seed)
    return [
        (attachment.feature_hook_name(h), _feature_edit_hook(ids, positions, sources[h]))
        for h, ids in feats.items()
    ]


# ------------------------------------------------------------------------------------ ablation
def ablate_features(
    model: ModelOrAttachment,
    tokens: TokensLike,
    features: FeaturesLike,
    metric: Metric,
    *,
    mode: AblationMode = "zero",
    positions: PositionsLike = None,
    reference_tokens: TokensLike | None = None,
    per_position_mean: bool = False,
    seed: int = 0,
    saes: Mapping[str, SAE[Any]] | None = None,
    logger: WandbLogger | bool | None = None,
) -> AblationResult:
    """Ablate ``features`` (at one or several hooks) and measure the metric's change.

    Args:
        model: an :class:`~gba_lens.adapters.Attachment` (``gba_lens.attach(model, saes,
            error_term=True)``), or a model together with ``saes``.
        tokens: ``[batch, pos]`` token ids (or text).
        features: which features: ``{hook: [ids]}``, ``[(hook, id), ...]``, or ids when one SAE
            is attached.
        metric: ``logits -> scalar`` (e.g. :func:`~gba_lens.circuits.metrics.logit_diff_metric`).
        mode: ``"zero"``, ``"mean"`` (over ``reference_tokens``, default ``tokens``) or
            ``"resample"`` (activations of another prompt at the same position).
        positions: where to ablate (None: every position; see ``PositionsLike``).
        reference_tokens: reference batch for mean / resample ablation.
        per_position_mean: mean ablation with a separate mean per position.
        seed: seed of the resampling.
        saes: ``{hook: sae}`` when ``model`` is a bare model (attached with the error term for
            the call).
        logger: W&B logging (see :mod:`gba_lens.circuits.wandb_logging`).

    Returns:
        :class:`AblationResult` with ``metric_clean``, ``metric_ablated`` and ``delta``.
    """
    with attached(model, saes) as att:
        warn_if_no_error_term(att, "ablate_features")
        toks = to_tokens(att.model, tokens)
        hooks = ablation_hooks(att, features, mode, positions, toks, reference_tokens, per_position_mean, seed)
        with torch.no_grad():
            clean = float(scalar_metric(metric, logits_of(att.model(toks))))
            with temporary_hooks(att.model, hooks):
                ablated = float(scalar_metric(metric, logits_of(att.model(toks))))
        feats = {h: ids.tolist() for h, ids in normalize_features(att, features).items()}
    config = dict(mode=mode, features=feats, positions=_describe(positions), per_position_mean=per_position_mean, seed=seed, n_prompts=int(toks.shape[0]))
    result = AblationResult(clean, ablated, feats, mode, config)
    log_result(logger, "ablate_features", config, scalars=dict(metric_clean=clean, metric_ablated=ablated, delta=result.delta))
    return result


def _describe(positions: PositionsLike) -> Any:
    if isinstance(positions, torch.Tensor):
        return f"tensor{list(positions.shape)}" if positions.numel() > 64 else positions.tolist()
    return positions


def ablation_sweep(
    model: ModelOrAttachment,
    tokens: TokensLike,
    metric: Metric,
    features: FeaturesLike | Literal["all", "active"] = "active",
    *,
    mode: AblationMode = "zero",
    positions: PositionsLike = None,
    reference_tokens: TokensLike | None = None,
    per_position_mean: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    skip_inactive: bool = True,
    saes: Mapping[str, SAE[Any]] | None = None,
    logger: WandbLogger | bool | None = None,
    progress: bool = True,
) -> Any:
    """Ablate features one at a time (batched) and tabulate the metric's change.

    Each forward pass runs ``batch_size`` edited copies of the prompt batch (default: as many as
    fit in 2,048 token positions), each copy ablating one feature.

    Args:
        features: the candidates: ``"active"`` (default: every feature of every attached SAE that
            fires at the selected positions), ``"all"``, or an explicit set (as in
            :func:`ablate_features`).
        skip_inactive: with zero ablation, a feature that never fires at the selected positions
            cannot change anything; its row gets ``delta = 0`` without a forward pass
            (``computed=False``).
        batch_size: replicates (features) per forward pass.
        Other arguments: as in :func:`ablate_features`.

    Returns:
        A pandas DataFrame with one row per feature: ``hook``, ``feature``, ``metric`` (ablated),
        ``delta`` (ablated - clean), ``mean_act`` and ``frac_active`` (at the selected positions
        of ``tokens``), ``computed``; sorted by ``|delta|``, largest first. ``df.attrs`` holds
        ``metric_clean``, ``n_forward`` and ``seconds``.
    """
    import pandas as pd

    start = time.perf_counter()
    with attached(model, saes) as att:
        warn_if_no_error_term(att, "ablation_sweep")
        _check_mode(mode)
        toks = to_tokens(att.model, tokens)
        batch, n_pos = toks.shape
        hooks = list(att.saes)
        names = {h: att.feature_hook_name(h) for h in hooks}
        logits, cache = capture(att.model, toks, list(names.values()))
        clean = float(scalar_metric(metric, logits))
        mask = position_mask(positions, batch, n_pos, toks.device)
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for h, name in names.items():
            sel = cache[name][mask]  # [n_selected, F]
            stats[h] = (sel.float().mean(0).cpu(), (sel > 0).float().mean(0).cpu())
        if isinstance(features, str):
            if features not in ("all", "active"):
                raise ValueError(f"features must be 'all', 'active' or explicit features, got {features!r}.")
            cand = {
                h: (torch.arange(d_sae_of(att, h)) if features == "all" else torch.nonzero(stats[h][1] > 0).flatten())
                for h in hooks
            }
        else:
            cand = normalize_features(att, features)
        ref = None if reference_tokens is None else to_tokens(att.model, reference_tokens)
        sources = ablation_sources(att, list(cand), mode, toks, ref, per_position_mean, seed)

        nodes: list[tuple[str, int]] = []
        skipped: list[tuple[str, int]] = []
        for h, ids in cand.items():
            for f in ids.tolist():
                inactive = float(stats[h][1][f]) == 0.0
                (skipped if (skip_inactive and mode == "zero" and inactive) else nodes).append((h, f))
        per_pass = replicates_per_pass(toks, batch_size)
        results: dict[tuple[str, int], float] = {}
        n_forward = 1
        iterator = progress_chunks(len(nodes), per_pass, "ablation sweep", progress)
        for lo, hi in iterator:
            chunk = nodes[lo:hi]
            edits = []
            for h in dict.fromkeys(h for h, _ in chunk):
                reps = [i for i, (hh, _) in enumerate(chunk) if hh == h]
                feats = torch.tensor([chunk[i][1] for i in reps], dtype=torch.long)
                edits.append(
                    NodeEdit(
                        name=names[h],
                        rep=torch.tensor(reps, dtype=torch.long),
                        feature=feats,
                        mask=mask[None],
                        values=_values_for(sources[h], feats, batch, n_pos),
                    )
                )
            metrics = run_replicated(att.model, toks, len(chunk), edits, metric)
            n_forward += 1
            for node, value in zip(chunk, metrics.tolist()):
                results[node] = value
    rows = []
    for h, f in nodes + skipped:
        value = results.get((h, f), clean)
        rows.append(
            dict(hook=h, feature=f, metric=value, delta=value - clean, mean_act=float(stats[h][0][f]),
                 frac_active=float(stats[h][1][f]), computed=(h, f) in results)
        )
    df = pd.DataFrame(rows, columns=["hook", "feature", "metric", "delta", "mean_act", "frac_active", "computed"])
    if len(df):
        df = df.reindex(df["delta"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
    seconds = time.perf_counter() - start
    df.attrs.update(metric_clean=clean, n_forward=n_forward, seconds=seconds, mode=mode)
    config = dict(mode=mode, features=features if isinstance(features, str) else _describe_feats(cand), positions=_describe(positions),
                  per_position_mean=per_position_mean, seed=seed, batch_size=per_pass, n_prompts=batch)
    if logger:
        figures = {}
        try:
            from gba_lens.circuits.plotting import plot_ablation_sweep

            figures["plot"] = plot_ablation_sweep(df)
        except Exception:  # noqa: BLE001 - plotting is optional for logging
            pass
        log_result(logger, "ablation_sweep", config, table=df, scalars=dict(metric_clean=clean), figures=figures)
    return df


def _describe_feats(feats: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {h: (ids.tolist() if ids.numel() <= 64 else f"{ids.numel()} features") for h, ids in feats.items()}

