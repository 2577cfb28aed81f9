"""``gba-lens dashboard``: a static feature-dashboard site for an SAE at a model's hook.

The options are :class:`gba_lens.dashboard.DashboardConfig` (its attribute docstrings are the
``--help``); the work is :func:`gba_lens.dashboard.run_dashboard`. With no ``--sae`` the command
first trains a small GBA SAE on the offline stdlib LM (:func:`train_default_sae`), kept under
``OUT/_sae`` so the next run reuses it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from gba_lens.cli.command import Command
from gba_lens.dashboard import DashboardConfig, run_dashboard
from gba_lens.dashboard.command import DEFAULT_HOOK

logger = logging.getLogger(__name__)


def train_default_sae(cfg: DashboardConfig, model: nn.Module, device: str) -> Path:
    """Directory of the default GBA SAE: trained on the stdlib LM on first use, then reused."""
    hook = cfg.hook or DEFAULT_HOOK
    base = Path(cfg.out) / "_sae"
    sae_dir = base / hook
    if (sae_dir / "cfg.json").is_file():
        logger.info("reusing the GBA SAE in %s", sae_dir)
        return sae_dir
    from gba_lens.training.lm import LMTrainConfig, train_gba_on_model

    print(f"No --sae given: training a {cfg.width}-wide GBA SAE on the stdlib LM at {hook} "
          f"({cfg.train_tokens:,} tokens; kept in {base} for the next run).")
    train_gba_on_model(
        LMTrainConfig(hook=[hook], width=[cfg.width], training_tokens=cfg.train_tokens, batch_tokens=1024,
                      context_size=64, eval_tokens=4096, out=str(base), device=device),
        model=model,
    )
    return sae_dir


def dashboard_with_default_sae(cfg: DashboardConfig) -> Path:
    """What ``gba-lens dashboard`` runs: :func:`run_dashboard`, training the default SAE if needed."""
    return run_dashboard(cfg, default_sae=train_default_sae)


def cmd_dashboard(cfg: DashboardConfig) -> int:
    dashboard_with_default_sae(cfg)
    return 0


COMMAND = Command("dashboard", DashboardConfig, cmd_dashboard)
