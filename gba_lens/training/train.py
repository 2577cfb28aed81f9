"""Train any SAELens training SAE (GBA or a baseline) on an activation stream.

One harness for every method, so comparisons share data, batch size, optimiser and schedule:
SAELens's trainer loop (through :class:`GBATrainer`) with a resumable data provider.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from sae_lens import LoggingConfig
from sae_lens import TrainingSAE

from gba_lens.compat import SAETrainerConfig

from gba_lens.data.batches import SeededBatches, TensorBatches
from gba_lens.saes.gba_options import EXECUTION_OPTIONS
from gba_lens.training.checkpoints import check_finite_sae, load_newest_intact
from gba_lens.training.device import resolve_device
from gba_lens.training.distributed import is_distributed, is_main_process
from gba_lens.training.run_options import RunOptions
from gba_lens.training.run_settings import data_fingerprint, notify, prepare_run_directory
from gba_lens.training.trainer import GBATrainer, latest_checkpoint, list_checkpoints, warn_if_l0_unsettled
from gba_lens.wandb_run import finish_run, start_run

__all__ = [
    "TrainConfig",
    "check_training_numbers",
    "final_checkpoint",
    "finish_wandb",
    "resolve_device",
    "run_settings",
    "start_wandb",
    "train_sae",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig(RunOptions):
    """How to train (shared by GBA and the baselines).

    The names and defaults this shares with :class:`~gba_lens.training.lm.LMTrainConfig` mean the
    same there: ``device="auto"`` is resolved by :func:`resolve_device` (cuda if available, else
    cpu; SAELens's trainer moves the SAE there), and resuming follows one rule
    (:mod:`gba_lens.training.run_settings`): the checkpoint directory records the run's settings;
    with ``resume`` (the default) a directory holding checkpoints of the same settings continues
    from the newest intact one, one of other settings is refused (listing the differences) unless
    ``resume_anyway`` or ``overwrite``; ``resume=False`` starts afresh and refuses a directory
    holding another run's checkpoints unless ``overwrite``.
    """

    total_samples: int = 3_000_000
    """Number of activation vectors to train on."""
    batch_size: int = 1024
    """Activation vectors per optimiser step."""
    lr: float = 3e-3
    """Adam learning rate (GBA wants more than SAELens's 3e-4 default)."""
    lr_warm_up_steps: int = 0
    """Linear learning-rate warm-up steps."""
    lr_decay_steps: int = 0
    """Linear learning-rate decay over the last steps (0: constant)."""
    device: str = "auto"
    """Torch device to train on (auto: cuda if available, else cpu)."""
    checkpoint_dir: str | None = None
    """Directory for checkpoints and the run's recorded settings (run_settings.json)."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every this many steps (0: only at the end)."""
    log_every: int = 50
    """Steps between W&B log entries."""
    histogram_every: int = 10
    """W&B log entries between bias / weight histograms."""
    dead_feature_window: int = 1000
    """Steps without firing after which SAELens counts a latent as dead."""

    def __post_init__(self) -> None:
        check_training_numbers(
            positive={"total_samples": self.total_samples, "batch_size": self.batch_size,
                      "log_every": self.log_every, "histogram_every": self.histogram_every,
                      "dead_feature_window": self.dead_feature_window},
            non_negative={"checkpoint_every": self.checkpoint_every, "lr_warm_up_steps": self.lr_warm_up_steps,
                          "lr_decay_steps": self.lr_decay_steps},
            positive_finite={"lr": self.lr},
        )
        if self.total_samples < self.batch_size:
            raise ValueError(f"total_samples ({self.total_samples}) < batch_size ({self.batch_size}): not one step")
        self.check_run_options()


def check_training_numbers(*, positive: dict[str, Any] = {}, non_negative: dict[str, Any] = {},  # noqa: B006
                           positive_finite: dict[str, Any] = {}) -> None:  # noqa: B006
    """One-line ``ValueError`` for the first count that is not a positive (or non-negative)
    integer, or number that is not positive and finite. Booleans are not counts."""
    for name, value in {**positive, **non_negative}.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < (1 if name in positive else 0):
            raise ValueError(f"{name} must be {'>= 1' if name in positive else '>= 0'}, got {value}")
    for name, value in positive_finite.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _trainer_config(cfg: TrainConfig) -> SAETrainerConfig:
    return SAETrainerConfig(
        total_training_samples=cfg.total_samples,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        device=resolve_device(cfg.device),
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


# Kept for one release: the W&B run is started and finished by gba_lens.wandb_run.
def start_wandb(project: str | None, run_name: str | None, config: dict[str, Any]) -> bool:
    """:func:`gba_lens.wandb_run.start_run` (kept for one release)."""
    return start_run(project, run_name, config)


def finish_wandb() -> None:
    """:func:`gba_lens.wandb_run.finish_run` (kept for one release)."""
    finish_run()


_TRAINING_RESULT_METADATA = frozenset({"l0", "num_dead_features"})


def run_settings(sae: TrainingSAE[Any], data: Any, cfg: TrainConfig,
                 identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """What defines a :func:`train_sae` run (recorded in the checkpoint directory, checked on
    resume): the SAE's config (not its device), the optimiser and schedule, the data stream's
    identity (a content fingerprint for in-memory activations) and the caller's ``identity``."""
    sae_cfg = {k: v for k, v in sae.cfg.to_dict().items() if k not in ("device", *EXECUTION_OPTIONS)}
    if isinstance(sae_cfg.get("metadata"), dict):
        # Neither a SAELens upgrade (*_version) nor what SAELens's trainer writes into the metadata
        # at the end of a run (l0, num_dead_features) changes what the run is.
        sae_cfg["metadata"] = {k: v for k, v in sae_cfg["metadata"].items()
                               if not k.endswith("_version") and k not in _TRAINING_RESULT_METADATA}
        details = sae_cfg["metadata"].get("training_architecture_details")
        if isinstance(details, dict):
            sae_cfg["metadata"]["training_architecture_details"] = {
                k: v for k, v in details.items() if k not in EXECUTION_OPTIONS}
    train = {k: getattr(cfg, k) for k in ("total_samples", "batch_size", "lr", "lr_warm_up_steps",
                                          "lr_decay_steps", "dead_feature_window")}
    if isinstance(data, TensorBatches):
        stream: dict[str, Any] = {"kind": "tensor", "seed": data.seed, **data_fingerprint(data.activations)}
    elif isinstance(data, SeededBatches):
        stream = {"kind": "seeded", "seed": data.seed, "sampler": getattr(data.sample_fn, "__qualname__", "?")}
    else:  # any other iterator: only the caller can say what it is (``identity``)
        stream = {}
    return {"sae": sae_cfg, "train": train, "data": stream, **(identity or {})}


def train_sae(
    sae: TrainingSAE[Any],
    data: Iterator[torch.Tensor],
    cfg: TrainConfig,
    *,
    extra_wandb_config: dict[str, Any] | None = None,
    run_identity: dict[str, Any] | None = None,
) -> GBATrainer:
    """Train ``sae`` in place on ``data`` (an iterator of [batch, d_in] tensors).

    With ``cfg.checkpoint_dir`` set, a periodic checkpoint is written atomically every
    ``cfg.checkpoint_every`` steps, and a new call with the same directory and settings resumes
    from the newest intact one: SAE weights (and the GBA controller state), optimiser, schedule,
    counters and the data position, so the resumed run ends where an uninterrupted one would.
    ``run_identity``: more settings that define the run (e.g. the data file and the seed),
    recorded and compared with the rest (see :func:`run_settings`).

    Under ``torchrun --nproc_per_node W`` each process calls this with the same ``sae``, ``data``
    (the global stream) and ``cfg`` (the global batch size): rank r trains on its ``batch_size / W``
    rows of every batch, with DDP, and the result is the SAE a single process would train
    (:mod:`gba_lens.training.distributed`). Only rank 0 logs and writes checkpoints; rank 0 checks
    the run directory and every rank follows its decision.

    Raises:
        RunSettingsError: the directory holds another run's checkpoints (see ``TrainConfig``).
        NonFiniteTrainingError: the SAE became NaN/inf; nothing non-finite was saved.
    """
    trainer_cfg = _trainer_config(cfg)
    trainer_cls: type[GBATrainer] = GBATrainer
    if is_distributed():
        from gba_lens.training import distributed

        distributed.ensure_process_group()
    resume = False
    if cfg.checkpoint_dir is not None:
        settings = run_settings(sae, data, cfg, run_identity)

        def prepare() -> bool:
            return prepare_run_directory(cfg.checkpoint_dir, settings, resume=cfg.resume,
                                         resume_anyway=cfg.resume_anyway, overwrite=cfg.overwrite)

        resume = distributed.on_main_then_share(prepare) if is_distributed() else prepare()
    if is_distributed():  # one rank of a torchrun launch: data parallel (gba_lens.training.distributed)
        trainer_cls = distributed.DistributedGBATrainer
        data = distributed.shard_batches(data, distributed.rank(), distributed.world_size(), cfg.batch_size)
        trainer_cfg.logger.log_to_wandb &= distributed.is_main_process()
    owns_run = False
    if trainer_cfg.logger.log_to_wandb:
        import wandb

        if wandb.run is None:
            config = {"train": asdict(cfg), "sae": sae.cfg.to_dict(), **(extra_wandb_config or {})}
            owns_run = start_run(cfg.wandb_project, cfg.wandb_run_name, config)
            trainer_cfg.logger.log_to_wandb = owns_run
    trainer = trainer_cls(
        cfg=trainer_cfg, sae=sae, data_provider=data, checkpoint_every=cfg.checkpoint_every
    )
    if resume:
        checkpoint = load_newest_intact(list_checkpoints(Path(cfg.checkpoint_dir)), trainer.resume_from)
        if checkpoint is not None and is_main_process():
            notify(f"resuming the run in {cfg.checkpoint_dir} at step {trainer.steps_completed} "
                   f"({checkpoint.name})")
    try:
        trainer.fit()
    finally:
        if owns_run:
            finish_run()
    check_finite_sae(sae, "at the end of training", latest_checkpoint(cfg.checkpoint_dir))
    if is_main_process():
        warn_if_l0_unsettled(trainer)
    return trainer


def final_checkpoint(directory: str | Path) -> Path | None:
    """The ``final_*`` checkpoint SAELens's trainer writes at the end of a run, if any."""
    finals = sorted(Path(directory).glob("final_*"))
    return finals[-1] if finals else None
