"""``gba-lens train`` options -> SAELens's runner configs (single- and multi-SAE)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunnerConfig

from gba_lens.saes.gba import GBATrainingSAEConfig
from gba_lens.training.lm.config import LMTrainConfig
from gba_lens.training.lm.sources import LoadedModel, TokenSource

__all__ = ["multi_runner_config", "n_batches_in_buffer", "runner_config", "sae_config"]


def n_batches_in_buffer(cfg: LMTrainConfig, context_size: int) -> int:
    """SAELens's shuffle buffer holds ``n_batches_in_buffer * context_size`` tokens and must hold
    at least one training batch."""
    return max(2, math.ceil(cfg.buffer_batches * cfg.batch_tokens / context_size))


def sae_config(cfg: LMTrainConfig, d_in: int, width: int, device: str) -> GBATrainingSAEConfig:
    return GBATrainingSAEConfig(d_in=d_in, d_sae=width, device=device, dtype=cfg.dtype, **cfg.gba_options())


def _logging_config(cfg: LMTrainConfig, on: bool) -> LoggingConfig:
    return LoggingConfig(
        log_to_wandb=on,
        wandb_project=cfg.wandb_project or "gba_lens",
        run_name=cfg.wandb_run_name,
        wandb_log_frequency=cfg.log_every,
        eval_every_n_wandb_logs=10,
        log_weights_to_wandb=False,
    )


def _shared_runner_fields(
    cfg: LMTrainConfig, loaded: LoadedModel, source: TokenSource, device: str, wandb_on: bool, checkpoint_dir: Path,
) -> dict[str, Any]:
    """Fields common to SAELens's single- and multi-SAE runner configs."""
    return dict(
        model_name=loaded.model_name,
        model_class_name=loaded.model_class_name,
        model_from_pretrained_kwargs=dict(loaded.from_pretrained_kwargs),
        dataset_path=source.dataset_path,
        streaming=source.streaming,
        context_size=source.context_size,
        n_batches_in_buffer=n_batches_in_buffer(cfg, source.context_size),
        training_tokens=cfg.training_tokens,
        store_batch_size_prompts=cfg.store_batch_prompts,
        exclude_special_tokens=cfg.exclude_special_tokens,
        device=device,
        seed=cfg.seed,
        dtype=cfg.dtype,
        train_batch_size_tokens=cfg.batch_tokens,
        lr=cfg.lr,
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        n_eval_batches=2,
        eval_batch_size_prompts=cfg.eval_batch_prompts,
        logger=_logging_config(cfg, wandb_on),
        checkpoint_path=str(checkpoint_dir),
        output_path=None,
        n_batches_for_norm_estimate=1,  # GBA normalises inside the SAE; nothing to estimate
        autocast=cfg.autocast,
        autocast_lm=cfg.autocast_lm,
    )


def runner_config(
    cfg: LMTrainConfig, loaded: LoadedModel, source: TokenSource, sae_cfg: GBATrainingSAEConfig,
    hook: str, device: str, wandb_on: bool, checkpoint_dir: Path, cache_dir: Path | None,
) -> LanguageModelSAERunnerConfig[Any]:
    """The config of ``LanguageModelSAETrainingRunner`` for one SAE (from ``cache_dir`` if given)."""
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        hook_name=hook,
        use_cached_activations=cache_dir is not None,
        cached_activations_path=None if cache_dir is None else str(cache_dir),
        verbose=False,
        **_shared_runner_fields(cfg, loaded, source, device, wandb_on, checkpoint_dir),
    )
    # SAELens appends a random id to checkpoint_path; a stable directory is what makes resuming work.
    runner_cfg.checkpoint_path = str(checkpoint_dir)
    return runner_cfg


def multi_runner_config(
    cfg: LMTrainConfig, loaded: LoadedModel, source: TokenSource, sae_cfgs: dict[str, GBATrainingSAEConfig],
    hooks: dict[str, str], device: str, wandb_on: bool, checkpoint_dir: Path,
) -> MultiSAETrainingRunnerConfig:
    """The config of ``MultiSAETrainingRunner`` for several SAEs trained from one model pass."""
    multi = MultiSAETrainingRunnerConfig(
        saes=sae_cfgs,
        hook_names=hooks,
        **_shared_runner_fields(cfg, loaded, source, device, wandb_on, checkpoint_dir),
    )
    multi.checkpoint_path = str(checkpoint_dir)
    return multi
