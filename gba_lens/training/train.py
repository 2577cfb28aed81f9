"""Train any SAELens training SAE (GBA or a baseline) on an activation stream.

One harness for every method, so comparisons share data, batch size, optimiser and schedule:
SAELens's trainer loop (through :class:`GBATrainer`) with a resumable data provider.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.sae import TrainingSAE

from gba_lens.training.trainer import GBATrainer, latest_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How to train (shared by GBA and the baselines)."""

    total_samples: int = 3_000_000
    """Number of activation vectors to train on."""
    batch_size: int = 1024
    """Activation vectors per optimiser step."""
    lr: float = 3e-3
    """Adam learning rate (GBA needs a larger one than SAELens's 3e-4 default; see README)."""
    lr_warm_up_steps: int = 0
    """Linear learning-rate warm-up steps."""
    lr_decay_steps: int = 0
    """Linear learning-rate decay over the last steps (0: constant)."""
    device: str = "cpu"
    """Torch device to train on."""
    checkpoint_dir: str | None = None
    """Directory for checkpoints; a run with existing checkpoints there resumes from the newest."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every this many steps (0: only at the end)."""
    resume: bool = True
    """Resume from the newest checkpoint in checkpoint_dir if there is one."""
    wandb_project: str | None = None
    """Log to this W&B project (offline-safe: set WANDB_MODE=offline; never needs a login)."""
    wandb_run_name: str | None = None
    """W&B run name."""
    log_every: int = 50
    """Steps between W&B log entries."""
    histogram_every: int = 10
    """W&B log entries between bias / weight histograms."""
    dead_feature_window: int = 1000
    """Steps without firing after which SAELens counts a latent as dead."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _trainer_config(cfg: TrainConfig) -> SAETrainerConfig:
    return SAETrainerConfig(
        total_training_samples=cfg.total_samples,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        device=cfg.device,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, 100),
        checkpoint_path=cfg.checkpoint_dir,
        n_checkpoints=0,
        save_final_checkpoint=cfg.checkpoint_dir is not None,
        logger=LoggingConfig(
            log_to_wandb=cfg.wandb_project is not None,
            wandb_project=cfg.wandb_project or "gba_lens",
            run_name=cfg.wandb_run_name,
            wandb_log_frequency=cfg.log_every,
            eval_every_n_wandb_logs=cfg.histogram_every,
            log_weights_to_wandb=False,
        ),
    )


def start_wandb(project: str | None, run_name: str | None, config: dict[str, Any]) -> bool:
    """Start a W&B run if asked; never raise. Returns whether logging is on."""
    if project is None:
        return False
    try:
        import wandb

        if os.environ.get("WANDB_MODE") is None and not _wandb_logged_in():
            os.environ["WANDB_MODE"] = "offline"  # never ask for a login
        wandb.init(project=project, name=run_name, config=config, reinit="finish_previous")
        return True
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not start W&B ({exc!r}); training without logging")
        return False


def _wandb_logged_in() -> bool:
    """An API key from the environment or from ``wandb login`` (netrc); never prompts."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb

        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # noqa: BLE001
        return False


def finish_wandb() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"W&B finish failed: {exc!r}")


def train_sae(
    sae: TrainingSAE[Any],
    data: Iterator[torch.Tensor],
    cfg: TrainConfig,
    *,
    extra_wandb_config: dict[str, Any] | None = None,
) -> GBATrainer:
    """Train ``sae`` in place on ``data`` (an iterator of [batch, d_in] tensors).

    With ``cfg.checkpoint_dir`` set, a periodic checkpoint is written atomically every
    ``cfg.checkpoint_every`` steps, and a new call with the same directory resumes from the newest
    one: SAE weights (and the GBA controller state), optimiser, schedule, counters and the data
    position, so the resumed run ends where an uninterrupted one would.
    """
    trainer_cfg = _trainer_config(cfg)
    owns_run = False
    if trainer_cfg.logger.log_to_wandb:
        import wandb

        if wandb.run is None:
            config = {"train": asdict(cfg), "sae": sae.cfg.to_dict(), **(extra_wandb_config or {})}
            owns_run = start_wandb(cfg.wandb_project, cfg.wandb_run_name, config)
            trainer_cfg.logger.log_to_wandb = owns_run
    trainer = GBATrainer(
        cfg=trainer_cfg, sae=sae, data_provider=data, checkpoint_every=cfg.checkpoint_every
    )
    checkpoint = latest_checkpoint(cfg.checkpoint_dir) if cfg.resume else None
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
        trainer.resume_from(checkpoint)
    try:
        trainer.fit()
    finally:
        if owns_run:
            finish_wandb()
    return trainer


def final_checkpoint(directory: str | Path) -> Path | None:
    """The ``final_*`` checkpoint SAELens's trainer writes at the end of a run, if any."""
    finals = sorted(Path(directory).glob("final_*"))
    return finals[-1] if finals else None
