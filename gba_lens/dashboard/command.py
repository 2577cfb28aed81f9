"""``gba-lens dashboard``: :class:`DashboardConfig` (its field docstrings are the ``--help``) and
:func:`run_dashboard`.

With no ``--sae``, ``run_dashboard`` asks its ``default_sae`` argument for one. The command line
passes :func:`gba_lens.cli.dashboard.train_default_sae`, which trains a small GBA SAE on the offline
stdlib LM and keeps it under ``OUT/_sae``; the dashboard itself never imports training code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DashboardConfig", "run_dashboard", "DEFAULT_HOOK"]

logger = logging.getLogger(__name__)

#: Hook of the SAE trained when no ``--sae`` is given (the stdlib LM's last residual input).
DEFAULT_HOOK = "blocks.1.hook_resid_pre"


@dataclass
class DashboardConfig:
    """Write a static feature dashboard (index + one page per feature) for an SAE at a hook of a TransformerLens model."""

    sae: str | None = None
    """SAELens SAE directory (cfg.json + weights; any architecture). Default: train a small GBA SAE on the offline stdlib LM (cached under OUT/_sae)."""
    model: str | None = None
    """TransformerLens model name (e.g. gpt2), or a local Hugging Face save_pretrained directory (TransformerBridge). Default: the offline stdlib LM."""
    hook: str | None = None
    """Hook point the SAE reads. Default: the SAE's cfg.metadata.hook_name (blocks.1.hook_resid_pre for the default SAE)."""
    dataset: str | None = None
    """Hugging Face dataset name (streamed), datasets save_to_disk directory, .jsonl/.parquet/.csv file (tokens, input_ids or text column), or .txt file / directory. Default: the stdlib corpus's held-out split."""
    tokens: int = 131_072
    """Tokens to collect statistics over."""
    context_size: int = 64
    """Tokens per row when the dataset is text (rows of tokenised datasets are used as they are)."""
    batch_size: int = 32
    """Rows per forward pass."""
    features: list[int] = field(default_factory=list)
    """Features that get a page (default: every feature that fires). The index always lists all."""
    top_k: int = 16
    """Top-activating contexts per feature."""
    samples_per_band: int = 3
    """Contexts sampled per activation band (8 bands from 0 to the max)."""
    context_left: int = 12
    """Tokens shown before the activating token."""
    context_right: int = 4
    """Tokens shown after the activating token."""
    dense_threshold: float = 0.1
    """Firing frequency above which a feature is flagged dense."""
    steering_prompt: str | None = None
    """Prompt for the steering previews (greedy continuation with the feature added). None: no previews."""
    steering_strength: float = 4.0
    """Steering coefficient, in multiples of the feature's max activation."""
    steering_features: int = 32
    """How many feature pages (in page order) get a steering preview."""
    train_tokens: int = 262_144
    """Training tokens of the default GBA SAE (only without --sae)."""
    width: int = 512
    """Width (d_sae) of the default GBA SAE (only without --sae)."""
    out: str = "runs/dashboard"
    """Output directory: index.html, feature_NNNNN.html, dashboard.json."""
    device: str = "auto"
    """Torch device (auto: cuda if available, else cpu)."""
    wandb_project: str | None = None
    """Also log the dashboard to this W&B project (artifact of type 'dashboard' + an HTML panel)."""
    wandb_run_name: str | None = None
    """W&B run name."""


def _device(spec: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if spec == "auto" else spec


def run_dashboard(cfg: DashboardConfig, default_sae: Callable[[DashboardConfig, Any, str], Path] | None = None) -> Path:
    """Build the dashboard described by ``cfg``; returns the path of ``index.html``.

    ``default_sae(cfg, model, device) -> SAE directory`` supplies the SAE when ``cfg.sae`` is None.
    """
    from gba_lens.dashboard.build import build, load_sae
    from gba_lens.dashboard.sources import load_dashboard_model, load_dashboard_tokens

    device = _device(cfg.device)
    if cfg.sae is None and cfg.model is not None:
        raise ValueError("--model needs --sae: the default SAE is trained on the stdlib LM only")
    sae = load_sae(cfg.sae, device=device)[0] if cfg.sae is not None else None
    model, model_name = load_dashboard_model(cfg.model, device, sae)
    if sae is None:
        if default_sae is None:
            raise ValueError("no --sae given: pass an SAELens SAE directory (the `gba-lens dashboard` command "
                             "trains a default GBA SAE on the stdlib LM instead)")
        sae = load_sae(default_sae(cfg, model, device), device=device)[0]
    tokens = load_dashboard_tokens(cfg.dataset, model, cfg.tokens, cfg.context_size)
    result = build(
        sae, model, cfg.hook, tokens, cfg.out, features=cfg.features or None, max_tokens=cfg.tokens,
        batch_size=cfg.batch_size, top_k=cfg.top_k, samples_per_band=cfg.samples_per_band,
        context_left=cfg.context_left, context_right=cfg.context_right, dense_threshold=cfg.dense_threshold,
        steering_prompt=cfg.steering_prompt, steering_strength=cfg.steering_strength,
        steering_features=cfg.steering_features, model_name=model_name,
    )
    if cfg.wandb_project:
        from gba_lens.dashboard.wandb_log import log_dashboard_to_wandb

        log_dashboard_to_wandb(result, cfg.wandb_project, cfg.wandb_run_name)
    summary = result.meta["summary"]
    print(f"dashboard: {summary['alive']} features fire, {summary['dead']} dead, {summary['dense']} dense; "
          f"{len(result.pages)} pages. Open {result.index_path.resolve().as_uri()}")
    return result.index_path

