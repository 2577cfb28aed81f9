"""Matplotlib plots of circuit results (imported lazily; figures are returned, never shown).

The plots take plain data (DataFrames of sweeps, score tensors); this module imports no other
circuit module, and the result types call it (``AttributionResult.heatmap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float

__all__ = ["plot_ablation_sweep", "plot_attribution_heatmap", "plot_feature_heatmap", "plot_steering_sweep"]


def _pyplot() -> Any:
    import matplotlib.pyplot as plt

    return plt


def plot_steering_sweep(df: Any, metric_name: str = "metric", ax: Any = None) -> Any:
    """Metric and KL from the clean model against the steering coefficient (two y-axes)."""
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    ax.plot(df["coefficient"], df["metric"], "o-", color="tab:blue", label=metric_name)
    ax.set_xlabel("coefficient")
    ax.set_ylabel(metric_name, color="tab:blue")
    clean = df.attrs.get("metric_clean")
    if clean is not None:
        ax.axhline(clean, color="tab:blue", ls=":", lw=1)
    ax2 = ax.twinx()
    ax2.plot(df["coefficient"], df["kl"], "s--", color="tab:red", label="KL(clean || steered)")
    ax2.set_ylabel("KL from clean (nats)", color="tab:red")
    ax.set_title("Steering sweep")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_ablation_sweep(df: Any, top: int = 20, ax: Any = None) -> Any:
    """Horizontal bars of the ``top`` largest metric changes of an ablation sweep."""
    plt = _pyplot()
    rows = df.head(top)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 0.25 * max(4, len(rows)) + 1))
    else:
        fig = ax.figure
    labels = [f"{h.split('.hook_')[0] if len(h) > 24 else h}:{f}" for h, f in zip(rows["hook"], rows["feature"])]
    ax.barh(range(len(rows)), rows["delta"], color=["tab:red" if d < 0 else "tab:blue" for d in rows["delta"]])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("metric change when ablated")
    ax.axvline(0, color="k", lw=0.5)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_feature_heatmap(
    feature_scores: Float[torch.Tensor, "pos d_sae"],
    error_scores: Float[torch.Tensor, " pos"] | None = None,
    k: int = 20,
    position_labels: Sequence[str] | None = None,
    title: str = "",
    ax: Any = None,
) -> Any:
    """Heatmap of per-position scores: top-``k`` features (by total ``|score|``) x positions.

    ``error_scores`` (if given) is the last row, labelled ``error``. Colours are centred on 0
    (red: patching lowers the metric, blue: raises it).
    """
    plt = _pyplot()
    fs = feature_scores.detach().cpu()
    if fs.ndim != 2:
        raise ValueError(f"feature_scores must be [pos, d_sae], got shape {list(fs.shape)}.")
    totals = fs.abs().sum(0)
    k = min(k, int((totals > 0).sum()) or 1)
    top = torch.topk(totals, k).indices
    rows = [fs[:, f] for f in top.tolist()]
    names = [f"f{f}" for f in top.tolist()]
    if error_scores is not None:
        rows.append(error_scores.detach().cpu())
        names.append("error")
    mat = torch.stack(rows).numpy()
    lim = float(abs(mat).max()) or 1.0
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5, 0.45 * mat.shape[1] + 2), 0.3 * len(names) + 1.5))
    else:
        fig = ax.figure
    im = ax.imshow(mat, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    if position_labels is not None:
        ax.set_xticks(range(len(position_labels)), list(position_labels), rotation=90, fontsize=7)
    else:
        ax.set_xlabel("position")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_attribution_heatmap(
    result: Any,
    hook: str | None = None,
    k: int = 20,
    position_labels: Sequence[str] | None = None,
    include_error: bool = True,
    ax: Any = None,
) -> Any:
    """:func:`plot_feature_heatmap` of one hook of an attribution result.

    ``result`` is an :class:`~gba_lens.circuits.AttributionResult` (this is what its
    ``heatmap()`` method draws); the error node of the hook is the last row.
    """
    hook = hook if hook is not None else result.hooks[0]
    if hook not in result.feature_scores:
        raise KeyError(f"No scores for {hook!r}; hooks: {result.hooks}.")
    return result.heatmap(hook, k=k, position_labels=position_labels, include_error=include_error, ax=ax)
