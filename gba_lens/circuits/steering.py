"""Steering with SAE features: add decoder directions, clamp activations, generate, sweep.

Two interventions, usable together and on several features / hooks at once:

* :class:`Steer` adds ``coefficient * W_dec[feature]`` to the activation at a hook point (all or
  chosen positions). The hook runs *before* the SAE splice at that hook point, so the SAE sees
  the steered activation (its feature activations respond, and with ``error_term=True`` the
  model downstream receives exactly ``x + coefficient * direction``). For ``attn.hook_z`` SAEs the
  direction is reshaped to ``[n_heads, d_head]``.
* :class:`Clamp` sets a feature's activation to a value at ``{hook}.hook_sae_acts_post``; the
  error term stays, so the output changes by ``(value - a) * W_dec[feature]``.

:func:`steering` is a context manager that keeps interventions on (any forward pass,
``generate``...); :func:`run_with_steering` and :func:`generate_with_steering` are one-call
forms, and :func:`steering_sweep` evaluates a target metric and the KL divergence from the clean
model over a range of coefficients (batched) with an optional plot.

The direction is the SAE's decoder row in the SAE's input space; for SAEs with run-time input
normalisation (``normalize_activations != "none"``) that is the normalised space.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from jaxtyping import Float
from sae_lens import SAE

from gba_lens.adapters import Attachment
from gba_lens.circuits.chunking import progress_chunks
from gba_lens.circuits.forward import logits_of, scalar_metric, temporary_hooks
from gba_lens.circuits.inputs import attached, feature_id, hook_key, normalize_features, position_mask, to_tokens
from gba_lens.circuits.metrics import kl_divergence
from gba_lens.circuits.replicated import replicates_per_pass
from gba_lens.circuits.types import FeaturesLike, HookFn, Metric, ModelOrAttachment, PositionsLike, TokensLike
from gba_lens.circuits.wandb_logging import WandbLogger, log_result

__all__ = [
    "Steer",
    "Clamp",
    "Intervention",
    "steering_direction",
    "steering",
    "run_with_steering",
    "generate_with_steering",
    "steering_sweep",
]


@dataclass(frozen=True)
class Steer:
    """Add ``coefficient * W_dec[feature]`` at ``hook`` (before the SAE sees the activation).

    Attributes:
        hook: the hook point an SAE is attached at (e.g. ``"blocks.6.hook_resid_pre"``).
        feature: feature id of that SAE.
        coefficient: multiple of the decoder direction to add.
        positions: where (None: every position, including newly generated tokens).
        normalize: use the unit-norm direction ``W_dec[f] / ||W_dec[f]||``.
    """

    hook: str
    feature: int
    coefficient: float
    positions: PositionsLike = None
    normalize: bool = False

    def __post_init__(self) -> None:
        _check_intervention(self.hook, self.feature, "coefficient", self.coefficient)


@dataclass(frozen=True)
class Clamp:
    """Set feature ``feature``'s activation at ``hook`` to ``value`` (at ``positions``)."""

    hook: str
    feature: int
    value: float
    positions: PositionsLike = None

    def __post_init__(self) -> None:
        _check_intervention(self.hook, self.feature, "value", self.value)


Intervention = Union[Steer, Clamp]


def _check_intervention(hook: Any, feature: Any, what: str, number: Any) -> None:
    """Type checks of a Steer / Clamp that need no model (the feature's range is checked later)."""
    if not isinstance(hook, str):
        raise ValueError(f"The hook must be a hook name (str), got {hook!r}.")
    feature_id(feature, hook, d_sae=sys.maxsize)
    try:
        value = None if isinstance(number, (bool, str, bytes)) else float(number)
    except (TypeError, ValueError, RuntimeError):
        value = None
    if value is None or not math.isfinite(value):
        raise ValueError(f"The {what} must be a finite number, got {number!r} for {hook!r}.")


def steering_direction(
    attachment: Attachment, hook: str, feature: int, normalize: bool = False
) -> Float[torch.Tensor, "*feature_shape"]:
    """Feature ``feature``'s decoder direction at ``hook``, in the hook's activation shape.

    ``[d_in]`` for residual-like hooks, ``[n_heads, d_head]`` for ``attn.hook_z``.
    """
    key = hook_key(attachment, hook)
    sae = attachment.saes[key]
    feature = feature_id(feature, key, int(sae.cfg.d_sae))
    direction = sae.W_dec[feature].detach()
    if normalize:
        norm = direction.norm()
        if norm == 0:
            raise ValueError(f"Feature {feature} at {key!r} has a zero decoder direction.")
        direction = direction / norm
    splice = attachment.splice(key)
    if splice.head_shape is not None:
        direction = direction.reshape(splice.head_shape)
    elif getattr(sae, "hook_z_reshaping_mode", False) and getattr(sae, "d_head", None):
        direction = direction.reshape(-1, int(sae.d_head))
    return direction


def _as_interventions(interventions: Intervention | Sequence[Intervention]) -> list[Intervention]:
    items = [interventions] if isinstance(interventions, (Steer, Clamp)) else list(interventions)
    for it in items:
        if not isinstance(it, (Steer, Clamp)):
            raise TypeError(f"Interventions must be Steer or Clamp, got {type(it).__name__}.")
    return items


def _steer_hook(direction: torch.Tensor, coefficients: torch.Tensor, positions: PositionsLike, n_rep: int = 1) -> HookFn:
    """Add ``coefficients[r] * direction`` to replicate ``r`` at ``positions``."""

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG001
        rb, n_pos = act.shape[0], act.shape[1]
        batch = rb // n_rep
        d = direction.to(device=act.device, dtype=act.dtype)
        if d.shape != act.shape[2:]:
            if d.numel() == act.shape[2:].numel():
                d = d.reshape(act.shape[2:])
            else:
                raise ValueError(f"Steering direction of shape {list(d.shape)} does not fit activations {list(act.shape)}.")
        mask = position_mask(positions, batch, n_pos, act.device).to(act.dtype)  # [B, P]
        coef = coefficients.to(device=act.device, dtype=act.dtype)  # [R]
        extra = [1] * (act.ndim - 2)
        delta = coef.view(n_rep, 1, 1, *extra) * mask.view(1, batch, n_pos, *extra) * d
        return act + delta.reshape(act.shape)

    return hook


def _clamp_hook(feature: int, values: torch.Tensor, positions: PositionsLike, n_rep: int = 1) -> HookFn:
    """Set feature ``feature`` to ``values[r]`` in replicate ``r`` at ``positions``."""

    def hook(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG001
        rb, n_pos = acts.shape[0], acts.shape[1]
        batch = rb // n_rep
        mask = position_mask(positions, batch, n_pos, acts.device)
        vals = values.to(device=acts.device, dtype=acts.dtype).view(n_rep, 1, 1).expand(n_rep, batch, n_pos)
        out = acts.clone()
        out[..., feature] = torch.where(mask[None], vals, acts[..., feature].reshape(n_rep, batch, n_pos)).reshape(rb, n_pos)
        return out

    return hook


def _hooks_for(att: Attachment, items: list[Intervention]) -> tuple[list[tuple[str, HookFn]], list[tuple[str, HookFn]]]:
    """(prepended hooks at model hook points, hooks at SAE feature hook points)."""
    pre, post = [], []
    for it in items:
        key = hook_key(att, it.hook)
        if isinstance(it, Steer):
            d = steering_direction(att, key, it.feature, it.normalize)
            pre.append((key, _steer_hook(d, torch.tensor([float(it.coefficient)]), it.positions)))
        else:
            normalize_features(att, {key: [it.feature]})  # validates the id
            post.append((att.feature_hook_name(key), _clamp_hook(int(it.feature), torch.tensor([float(it.value)]), it.positions)))
    return pre, post


@contextlib.contextmanager
def steering(attachment: Attachment, interventions: Intervention | Sequence[Intervention]) -> Iterator[Attachment]:
    """Keep ``interventions`` on ``attachment.model`` inside the ``with`` block.

    Example::

        with gba_lens.attach(model, {hook: sae}, error_term=True) as att:
            with steering(att, [Steer(hook, 123, 8.0), Clamp(hook, 45, 0.0)]):
                text = model.generate("Hello", max_new_tokens=20)
    """
    if not isinstance(attachment, Attachment):
        raise TypeError("steering() needs an Attachment from gba_lens.attach(...).")
    pre, post = _hooks_for(attachment, _as_interventions(interventions))
    with temporary_hooks(attachment.model, pre, prepend=True), temporary_hooks(attachment.model, post):
        yield attachment


def run_with_steering(
    model: ModelOrAttachment,
    tokens: TokensLike,
    interventions: Intervention | Sequence[Intervention],
    *,
    saes: Mapping[str, SAE[Any]] | None = None,
) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """Logits of ``tokens`` with the interventions on (no grad)."""
    with attached(model, saes) as att:
        toks = to_tokens(att.model, tokens)
        with torch.no_grad(), steering(att, interventions):
            return logits_of(att.model(toks))


def generate_with_steering(
    model: ModelOrAttachment,
    prompt: TokensLike,
    interventions: Intervention | Sequence[Intervention],
    max_new_tokens: int = 20,
    *,
    saes: Mapping[str, SAE[Any]] | None = None,
    **generate_kwargs: Any,
) -> Any:
    """``model.generate`` with the interventions on.

    Interventions at chosen positions index the full sequence, so the KV cache is switched off
    for them (``use_past_kv_cache=False``); interventions at every position keep it (each new
    token is steered too). Other keyword arguments go to ``generate`` (``do_sample``,
    ``temperature``, ``return_type``, ...). Returns what ``generate`` returns (text for text
    input by default).
    """
    items = _as_interventions(interventions)
    if any(it.positions is not None for it in items):
        generate_kwargs.setdefault("use_past_kv_cache", False)
    generate_kwargs.setdefault("verbose", False)
    with attached(model, saes) as att:
        if isinstance(prompt, torch.Tensor):
            prompt = to_tokens(att.model, prompt)
        with torch.no_grad(), steering(att, items):
            return att.model.generate(prompt, max_new_tokens=max_new_tokens, **generate_kwargs)  # type: ignore[operator]


def steering_sweep(
    model: ModelOrAttachment,
    tokens: TokensLike,
    features: FeaturesLike,
    coefficients: Sequence[float] | torch.Tensor,
    metric: Metric,
    *,
    mode: Literal["add", "clamp"] = "add",
    positions: PositionsLike = None,
    normalize: bool = False,
    kl_positions: PositionsLike = None,
    batch_size: int | None = None,
    saes: Mapping[str, SAE[Any]] | None = None,
    logger: WandbLogger | bool | None = None,
    plot: bool = False,
    metric_name: str = "metric",
    progress: bool = True,
) -> Any:
    """Steer with ``features`` at each coefficient; tabulate the metric and the KL from clean.

    Args:
        model: an Attachment, or a model with ``saes``.
        tokens: ``[batch, pos]`` prompts.
        features: the feature(s) to steer (``{hook: ids}``, ``(hook, id)`` pairs, or ids for a
            single SAE); all get the same coefficient.
        coefficients: the coefficients (``mode="add"``: multiples of the decoder direction;
            ``mode="clamp"``: the activation value to clamp to).
        metric: ``logits -> scalar`` target (e.g. ``token_prob_metric(token_id)``).
        positions: where to intervene (None: every position).
        normalize: unit-norm decoder directions (``mode="add"``).
        kl_positions: positions over which ``KL(clean || steered)`` of the next-token
            distribution is averaged (None: every position).
        batch_size: coefficients per forward pass (default: as many as fit in 2,048 positions).
        logger: W&B logging (config, table, plot).
        plot: also return a matplotlib figure: ``(df, fig)``.
        metric_name: label of the metric in the table's attrs and the plot.

    Returns:
        A pandas DataFrame with columns ``coefficient``, ``metric``, ``kl`` and ``feature_act``
        (mean activation of the steered features at the steered positions, as the SAE sees it);
        ``df.attrs`` has ``metric_clean``. With ``plot=True``: ``(df, figure)``.
    """
    import pandas as pd

    if mode not in ("add", "clamp"):
        raise ValueError(f"mode must be 'add' or 'clamp', got {mode!r}.")
    coefs = torch.as_tensor(coefficients, dtype=torch.float32).flatten()
    if coefs.numel() == 0:
        raise ValueError("No coefficients given.")
    if not torch.isfinite(coefs).all():
        raise ValueError("Coefficients must be finite.")
    start = time.perf_counter()
    with attached(model, saes) as att:
        toks = to_tokens(att.model, tokens)
        batch, n_pos = toks.shape
        feats = normalize_features(att, features)
        with torch.no_grad():
            clean_logits = logits_of(att.model(toks))
        clean_metric = float(scalar_metric(metric, clean_logits))
        kl_mask = position_mask(kl_positions, batch, n_pos, toks.device)
        steer_mask = position_mask(positions, batch, n_pos, toks.device)
        per_pass = replicates_per_pass(toks, batch_size)
        rows = []
        iterator = progress_chunks(len(coefs), per_pass, "steering sweep", progress)
        for lo, hi in iterator:
            c = coefs[lo:hi]
            n_rep = len(c)
            pre, post, captured = [], [], {}
            for key, ids in feats.items():
                for f in ids.tolist():
                    if mode == "add":
                        d = steering_direction(att, key, f, normalize)
                        pre.append((key, _steer_hook(d, c, positions, n_rep)))
                    else:
                        post.append((att.feature_hook_name(key), _clamp_hook(f, c, positions, n_rep)))
                post.append((att.feature_hook_name(key), _capture_features(captured, key, ids)))
            with torch.no_grad(), temporary_hooks(att.model, pre, prepend=True), temporary_hooks(att.model, post):
                logits = logits_of(att.model(toks.repeat(n_rep, 1)))
            for r in range(n_rep):
                lr = logits[r * batch : (r + 1) * batch]
                acts = torch.cat([captured[k].view(n_rep, batch, n_pos, -1)[r][steer_mask] for k in feats], dim=-1)
                rows.append(
                    dict(
                        coefficient=float(c[r]),
                        metric=float(scalar_metric(metric, lr)),
                        kl=float(kl_divergence(clean_logits, lr, kl_mask)),
                        feature_act=float(acts.float().mean()),
                    )
                )
    df = pd.DataFrame(rows, columns=["coefficient", "metric", "kl", "feature_act"])
    df.attrs.update(metric_clean=clean_metric, metric_name=metric_name, mode=mode, seconds=time.perf_counter() - start)
    fig = None
    if plot or logger:
        from gba_lens.circuits.plotting import plot_steering_sweep

        fig = plot_steering_sweep(df, metric_name=metric_name)
    config = dict(mode=mode, features={k: v.tolist() for k, v in feats.items()}, coefficients=coefs.tolist(),
                  positions=str(positions) if isinstance(positions, torch.Tensor) else positions, normalize=normalize, n_prompts=batch,
                  metric_name=metric_name)
    log_result(logger, "steering_sweep", config, table=df, scalars=dict(metric_clean=clean_metric), figures={"plot": fig} if fig is not None else None)
    return (df, fig) if plot else df


def _capture_features(store: dict[str, torch.Tensor], key: str, ids: torch.Tensor) -> HookFn:
    def hook(acts: torch.Tensor, hook: Any = None) -> None:  # noqa: ARG001
        store[key] = acts[..., ids.to(acts.device)].detach()

    return hook
