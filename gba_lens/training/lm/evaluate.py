"""Held-out evaluation of trained SAEs with SAELens's ``run_evals``, plus GBA's per-group view.

``run_evals`` gives the downstream metrics (CE loss recovered = ``ce_loss_score``, KL), the
reconstruction metrics (explained variance, MSE, cosine similarity), L0 / L1 and per-latent
firing densities. The densities are averaged over each GBA neuron group and set against the
group's target frequency: the check that bias adaptation did what it was asked to.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens import run_evals

from gba_lens.compat import EvalConfig
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.training.activations_store import ActivationsStore
from torch import nn

from gba_lens.saes.bias_adaptation import GroupBiasAdaptation

__all__ = [
    "SUMMARY_COLUMNS",
    "SAEEvalResult",
    "evaluate_sae",
    "group_table",
    "make_eval_store",
    "plot_group_frequencies",
    "special_token_ids",
    "summary_table",
]

#: (key in :attr:`SAEEvalResult.metrics`, column title) for the summary table.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ce_loss_score", "CE loss recovered"),
    ("ce_loss_without_sae", "CE clean"),
    ("ce_loss_with_sae", "CE with SAE"),
    ("ce_loss_with_ablation", "CE zero-abl."),
    ("kl_div_with_sae", "KL (SAE)"),
    ("explained_variance", "EV"),
    ("l0", "L0"),
    ("dead_fraction", "dead"),
)


@dataclass
class SAEEvalResult:
    """Held-out metrics of one SAE (all plain floats, JSON-ready)."""

    name: str
    hook_name: str
    d_in: int
    d_sae: int
    eval_tokens: int
    metrics: dict[str, float]
    group_targets: list[float] = field(default_factory=list)
    group_frequencies: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_eval_store(
    model: nn.Module,
    dataset: Any,
    hook_name: str,
    d_in: int,
    context_size: int,
    batch_prompts: int,
    device: str,
    dtype: str = "float32",
) -> ActivationsStore:
    """A SAELens ``ActivationsStore`` over held-out tokens (only its token stream is used)."""
    import datasets

    return ActivationsStore(
        model=model,  # type: ignore[arg-type]
        dataset=dataset,
        streaming=isinstance(dataset, datasets.IterableDataset),
        hook_name=hook_name,
        hook_head_index=None,
        context_size=context_size,
        d_in=d_in,
        n_batches_in_buffer=2,
        total_training_tokens=0,
        store_batch_size_prompts=batch_prompts,
        train_batch_size_tokens=batch_prompts * context_size,
        prepend_bos=True,
        normalize_activations="none",
        device=torch.device(device),
        dtype=dtype,
    )


def evaluate_sae(
    sae: SAE[Any],
    model: nn.Module,
    store: ActivationsStore,
    *,
    name: str,
    n_batches: int,
    batch_prompts: int,
    exclude_special_tokens: list[int] | bool = False,
    controller: GroupBiasAdaptation | None = None,
    verbose: bool = True,
) -> SAEEvalResult:
    """Run SAELens's evals on ``n_batches`` batches of held-out tokens.

    ``exclude_special_tokens`` is passed on to ``run_evals`` (False: every token counts, which a
    model without a tokenizer needs). ``controller`` (the training SAE's ``bias_adaptation``)
    maps latents to GBA groups; without it the group fields stay empty.
    """
    eval_config = EvalConfig(
        batch_size_prompts=batch_prompts,
        n_eval_reconstruction_batches=n_batches,
        compute_kl=True,
        compute_ce_loss=True,
        n_eval_sparsity_variance_batches=n_batches,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
    )
    was_training = sae.training
    sae.eval()
    try:
        grouped, per_feature = run_evals(
            sae=sae,
            activation_store=store,
            model=model,  # type: ignore[arg-type]
            activation_scaler=ActivationScaler(),  # GBA folds its input scale into the weights
            eval_config=eval_config,
            exclude_special_tokens=exclude_special_tokens,
            verbose=verbose,
        )
    finally:
        sae.train(was_training)
    metrics: dict[str, float] = {}
    for group in grouped.values():
        for key, value in group.items():
            metrics[key] = float(value)
    density = torch.tensor(per_feature["feature_density"], dtype=torch.float32)
    metrics["dead_fraction"] = float((density == 0).float().mean())
    metrics["mean_feature_density"] = float(density.mean())
    result = SAEEvalResult(
        name=name,
        hook_name=sae.cfg.metadata.hook_name,
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        eval_tokens=int(metrics.get("total_tokens_eval_sparsity_variance", 0)),
        metrics=metrics,
    )
    if controller is not None:
        result.group_targets = [float(t) for t in controller.group_targets.tolist()]
        result.group_frequencies = [float(f) for f in controller.group_frequencies(density.to(controller.group.device)).tolist()]
    return result


def special_token_ids(model: nn.Module) -> list[int]:
    """The tokenizer's special tokens (BOS/EOS/PAD...), as SAELens's evals exclude them."""
    from gba_lens.compat import get_special_token_ids

    tok = getattr(model, "tokenizer", None)
    return [] if tok is None else list(get_special_token_ids(tok))


# ------------------------------------------------------------------------------- reporting
def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1e-2:
        return f"{value:.4f}"
    return f"{value:.2e}"


def summary_table(results: list[SAEEvalResult]) -> str:
    """Markdown table: one row per SAE, the headline held-out metrics."""
    head = ["SAE", "width"] + [title for _, title in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        cells = [r.name, str(r.d_sae)] + [_fmt(r.metrics.get(key)) for key, _ in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(result: SAEEvalResult) -> str:
    """Markdown table of one SAE's per-group firing frequency against its target."""
    lines = [
        f"Per-group firing frequency on held-out tokens ({result.name})",
        "",
        "| group | target | frequency | frequency / target |",
        "|---|---|---|---|",
    ]
    for k, (t, f) in enumerate(zip(result.group_targets, result.group_frequencies)):
        lines.append(f"| {k} | {t:.2e} | {f:.2e} | {f / t:.2f} |")
    return "\n".join(lines)


def plot_group_frequencies(results: list[SAEEvalResult], path: str | Path) -> Path:
    """PNG of each SAE's per-group frequency against the target (log scale).

    Uses ``matplotlib.figure.Figure`` directly, so the global pyplot backend (e.g. a notebook's
    inline backend) is left alone.
    """
    from matplotlib.figure import Figure

    results = [r for r in results if r.group_targets]
    if not results:
        raise ValueError("no GBA group statistics to plot")
    fig = Figure(figsize=(5.5 * len(results), 4.0), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, r in zip(axes, results):
        k = list(range(len(r.group_targets)))
        freq = [max(f, 1e-7) for f in r.group_frequencies]
        ax.plot(k, r.group_targets, "k--o", label="target", markersize=4)
        ax.bar(k, freq, color="tab:blue", alpha=0.7, label="held-out frequency")
        ax.set_yscale("log")
        ax.set_xlabel("GBA group (high target -> low target)")
        ax.set_ylabel("firing frequency")
        ax.set_title(f"{r.name} (width {r.d_sae})", fontsize=10)
        ax.set_xticks(k)
        ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
