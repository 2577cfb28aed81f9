"""SAELens's language-model runners, with gba_lens's :class:`GBATrainer` in place of ``SAETrainer``.

SAELens builds its trainer inline: ``LanguageModelSAETrainingRunner.run`` and
``MultiSAETrainingRunner.run`` construct a plain ``SAETrainer`` / ``MultiSAETrainer`` (which in
turn constructs plain ``SAETrainer`` objects), call ``wandb.init`` / ``wandb.finish`` without a
guard and save the final SAE themselves. There is no factory argument to swap the trainer class.
So the narrowest change is to override ``run`` (and nothing else): everything the runners set
up in ``__init__`` - model, ``ActivationsStore`` (streaming, buffering, mixing, special-token
filtering, cached activations), SAE construction from config, SAE metadata, the evaluator used
during training - stays SAELens's. The overridden ``run`` differs in three ways:

1. the trainer is a :class:`GBATrainer` (safetensors + JSON checkpoints written atomically,
   never a pickle; W&B failures never stop training; periodic resumable checkpoints);
2. W&B is left to the caller (:func:`gba_lens.training.lm.train_gba_on_model` starts the run
   with a guard and keeps it open to log the held-out evaluation after training);
3. saving is left to the caller too, and an interrupted run (SIGINT / SIGTERM) writes a
   resumable GBATrainer checkpoint (SAELens's handler saves only the data position).

Periodic checkpoints, guarded logging and save-on-interrupt are the single-SAE trainer's
(:class:`~gba_lens.training.trainer.ResumableTraining`, :func:`fit_saving_on_interrupt`).

``CacheActivationsRunner`` always loads its model from the hub by name; the subclass here takes
an already-loaded model (the offline stdlib LM, a local bridge) and is otherwise SAELens's.
"""

from __future__ import annotations

import contextlib
import logging
import random
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array2D, Features, Sequence, Value
from sae_lens import CacheActivationsRunner, LanguageModelSAETrainingRunner
from sae_lens import CacheActivationsRunnerConfig
from gba_lens.compat import SPARSITY_FILENAME
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
from sae_lens import TrainingSAE
from sae_lens.training.multi_sae_trainer import MultiSAETrainer
from sae_lens.training.prefetch import PrefetchingIterator
from sae_lens.training.sae_trainer import SAETrainer
from torch import nn

from gba_lens.training.checkpoints import check_finite_sae
from gba_lens.training.distributed import DistributedGBATrainer, fitting_on_ranks, is_distributed, is_main_process
from gba_lens.training.lm.distributed import rank_trainer_config, shard_cached_activations
from gba_lens.training.lm.resume import checkpoint_candidates, resume_and_replay
from gba_lens.training.state_io import CheckpointError, atomic_directory
from gba_lens.training.trainer import (GBATrainer, ResumableTraining, fit_saving_on_interrupt, latest_checkpoint,
                                      warn_if_l0_unsettled)

__all__ = [
    "GBALanguageModelRunner",
    "GBAMultiSAERunner",
    "GBAMultiSAETrainer",
    "OfflineCacheActivationsRunner",
    "quiet_saelens",
    "seed_everything",
]

STORE_STATE_FILENAME = "activations_store_state.safetensors"


@contextlib.contextmanager
def quiet_saelens() -> Iterator[None]:
    """SAELens warns that override_model/override_dataset make a run "not reproducible from
    configuration alone" (true, and recorded in results.json) and about dataset epochs."""
    log = logging.getLogger("sae_lens")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fewer samples.*")
            warnings.filterwarnings("ignore", message=".*pretokenized dataset has context_size.*")
            warnings.filterwarnings("ignore", message=".*To copy construct from a tensor.*")
            yield
    finally:
        log.setLevel(level)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _prefetched(provider: Any, prefetch: bool | int) -> Iterator[Any]:
    """``provider``, read ahead in a background thread when SAELens's ``prefetch_llm_batches``
    asks for it (``True``: one batch; an int: that many); the thread is closed afterwards."""
    if prefetch:
        provider = PrefetchingIterator(iter(provider), prefetch=1 if isinstance(prefetch, bool) else prefetch)
    try:
        yield provider
    finally:
        if isinstance(provider, PrefetchingIterator):
            provider.close()


class GBALanguageModelRunner(LanguageModelSAETrainingRunner):
    """``LanguageModelSAETrainingRunner`` whose ``run`` trains with :class:`GBATrainer`.

    Constructed exactly like SAELens's runner (``cfg``, ``override_dataset``, ``override_model``,
    ``override_sae``), plus ``checkpoint_every`` (steps between resumable checkpoints in
    ``cfg.checkpoint_path``), ``resume_from`` (a checkpoint directory to continue from, or
    several, oldest first: the newest intact one is used, see :mod:`gba_lens.training.lm.resume`)
    and ``data_parallel`` (default: when launched on several ranks). ``run()`` returns the trained
    SAE; the trainer stays available as ``self.trainer`` and the checkpoint it resumed from as
    ``self.resumed_from``.
    """

    trainer: GBATrainer | None

    def __init__(
        self,
        cfg: Any,
        override_dataset: Any = None,
        override_model: Any = None,
        override_sae: TrainingSAE[Any] | None = None,
        *,
        checkpoint_every: int = 0,
        resume_from: str | Path | list[Path] | None = None,
        data_parallel: bool | None = None,
    ) -> None:
        super().__init__(cfg, override_dataset, override_model, override_sae)
        self.checkpoint_every = checkpoint_every
        self.resume_from = resume_from
        self.resumed_from: Path | None = None
        self.data_parallel = is_distributed() if data_parallel is None else data_parallel
        self.trainer = None
        if self.data_parallel:  # training from an activation cache: this rank reads its shard of it
            shard_cached_activations(self.activations_store)

    def run(self) -> TrainingSAE[Any]:  # type: ignore[override]
        self._set_sae_metadata()
        with _prefetched(self.activations_store, self.cfg.prefetch_llm_batches) as data_provider:
            # The one place that differs from SAELens: GBATrainer instead of SAETrainer (one rank's
            # DistributedGBATrainer under torchrun: gba_lens.training.lm.distributed).
            trainer_cls, trainer_cfg = GBATrainer, self.cfg.to_sae_trainer_config()
            if self.data_parallel:
                trainer_cls, trainer_cfg = DistributedGBATrainer, rank_trainer_config(trainer_cfg)
            self.trainer = trainer_cls(
                cfg=trainer_cfg,
                sae=self.sae,
                data_provider=data_provider,
                evaluator=self.evaluator,
                save_checkpoint_fn=self.save_checkpoint,
                checkpoint_every=self.checkpoint_every,
            )
            trainer = self.trainer
            self.resumed_from = resume_and_replay(checkpoint_candidates(self.resume_from), trainer.resume_from,
                                                  trainer, data_provider)
            self._compile_sae_if_needed()
            sae = self.run_trainer_with_interruption_handling(self.trainer)
        if is_main_process():
            warn_if_l0_unsettled(self.trainer, self.cfg.hook_name)
        return sae

    def run_trainer_with_interruption_handling(self, trainer: SAETrainer[Any, Any]) -> TrainingSAE[Any]:
        if isinstance(trainer, GBATrainer):
            return fit_saving_on_interrupt(trainer)
        return super().run_trainer_with_interruption_handling(trainer)


class _PrefixedGBATrainer(GBATrainer):
    """A GBATrainer inside a multi-SAE trainer: its own W&B keys get the SAE's name as prefix."""

    def __init__(self, *args: Any, log_prefix: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_prefix = log_prefix

    def _log_sparsity_window(self) -> None:
        import wandb

        def log() -> None:
            window = SAETrainer.full_sparsity_window_log(self)
            if window:
                wandb.log({f"{self.log_prefix}/{k}": v for k, v in window.items()}, step=self.n_training_steps)

        self._safe(log)


class _PrefixedDistributedGBATrainer(_PrefixedGBATrainer, DistributedGBATrainer):
    """One SAE of a data-parallel multi-SAE run: DDP step, global counters, rank-0 checkpoints."""


class GBAMultiSAETrainer(ResumableTraining, MultiSAETrainer):
    """``MultiSAETrainer`` whose per-SAE trainers are GBATrainers, with guarded W&B calls.

    SAELens's coordinator creates one plain ``SAETrainer`` per SAE in ``__init__``; they hold
    nothing but an (empty) optimiser and counters at that point, so they are replaced right
    after with GBATrainers built from the same per-SAE config. Checkpoints are then written by
    GBATrainer (safetensors, one directory per SAE, in SAELens's multi-SAE layout).

    ``data_parallel`` (one rank of a torchrun launch; ``cfg`` holds this rank's batch, the data
    provider yields this rank's rows): every SAE is stepped by a
    :class:`~gba_lens.training.distributed.DistributedGBATrainer` (DDP, GBA statistics all-reduced,
    ranks checked to agree), counters and checkpoints are global, and rank 0 alone logs and writes.
    """

    def __init__(self, *args: Any, checkpoint_every: int = 0, keep_checkpoints: int = 2,
                 data_parallel: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_parallel = data_parallel
        trainer_cls: type[_PrefixedGBATrainer] = _PrefixedGBATrainer
        if data_parallel:  # the run's batch is global: so are the counters and the checkpoint names
            self.cfg = rank_trainer_config(self.cfg)
            self.cfg.logger.log_to_wandb &= is_main_process()
            trainer_cls = _PrefixedDistributedGBATrainer
        per_sae_cfg = replace(self.cfg, n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False)
        self.trainers = {  # type: ignore[assignment]
            name: trainer_cls(cfg=per_sae_cfg, sae=sae, data_provider=iter(()), log_prefix=name)
            for name, sae in self.saes.items()
        }
        self._init_resumable(checkpoint_every, keep_checkpoints)

    def fit(self) -> dict[str, TrainingSAE[Any]]:
        if not self.data_parallel:
            return super().fit()
        from gba_lens.compat import multi_sae_trainer_module  # its progress bar: rank 0 only

        with fitting_on_ranks(list(self.saes.values()), torch.device(self.cfg.device),
                              lambda: self.n_training_steps, multi_sae_trainer_module):
            return super().fit()

    def _prune_checkpoints(self) -> None:
        if not self.data_parallel or is_main_process():
            super()._prune_checkpoints()

    def load_checkpoint(self, path: str | Path) -> None:
        """Each SAE's weights and trainer state from ``path/<name>`` (GBATrainer.resume_from:
        architecture checked, :class:`CheckpointError` on a missing or corrupt part)."""
        path = Path(path)
        missing = [name for name in self.saes if not (path / name).is_dir()]
        if missing:
            raise CheckpointError(f"incomplete multi-SAE checkpoint {path}: no directory for {missing}")
        for name, trainer in self.trainers.items():
            trainer.resume_from(path / name)
        any_trainer = next(iter(self.trainers.values()))
        self.n_training_samples = any_trainer.n_training_samples
        # GBATrainer stores completed steps; keep the coordinator's counter in step with it.
        self.n_training_steps = self.steps_completed

    def save_checkpoint(self, checkpoint_name: str, wandb_aliases: list[str] | None = None) -> None:
        """Every SAE's directory and the runner's files written into one temporary directory,
        renamed into place at once: a multi-SAE checkpoint is complete or absent. (SAELens writes
        the SAEs one after another into the final directory.) Nothing non-finite is saved."""
        base = self.cfg.checkpoint_path
        if base is None or (self.data_parallel and not is_main_process()):
            return
        if len({trainer.n_training_samples for trainer in self.trainers.values()}) > 1:
            # An interrupt between two SAEs' steps: the SAEs are at different steps; the newest
            # periodic checkpoint stays the resume point.
            warnings.warn("interrupted inside a training step: no checkpoint written", stacklevel=2)
            return
        check_finite_sae(dict(self.saes), f"after {self.steps_completed} steps", latest_checkpoint(base))
        target = Path(base) / checkpoint_name
        files = {}
        with atomic_directory(target) as tmp:
            for name, trainer in self.trainers.items():
                (tmp / name).mkdir()
                files[name] = trainer.write_checkpoint_files(tmp / name)
            if self.save_checkpoint_fn is not None:
                self.save_checkpoint_fn(checkpoint_path=tmp)
        for name, (weights, cfg_file) in files.items():  # as SAELens: each SAE as a W&B artifact
            self._safe(self.cfg.logger.log, self.trainers[name], target / name / weights.name,
                       target / name / cfg_file.name, sparsity_path=target / name / SPARSITY_FILENAME,
                       wandb_aliases=wandb_aliases)


class GBAMultiSAERunner(MultiSAETrainingRunner):
    """``MultiSAETrainingRunner`` (several SAEs, one model pass) training with GBATrainers.

    ``run()`` is overridden for the same reasons as :class:`GBALanguageModelRunner`; it returns
    ``{name: sae}`` and keeps the coordinator as ``self.trainer``.
    """

    trainer: GBAMultiSAETrainer | None

    def __init__(
        self,
        cfg: Any,
        override_dataset: Any = None,
        override_model: Any = None,
        override_saes: dict[str, TrainingSAE[Any]] | None = None,
        *,
        checkpoint_every: int = 0,
        resume_from: str | Path | list[Path] | None = None,
        data_parallel: bool | None = None,
    ) -> None:
        super().__init__(cfg, override_dataset, override_model, override_saes)
        self.checkpoint_every = checkpoint_every
        self.resume_from = resume_from
        self.resumed_from: Path | None = None
        self.data_parallel = is_distributed() if data_parallel is None else data_parallel
        self.trainer = None

    def run(self) -> dict[str, TrainingSAE[Any]]:
        self._set_sae_metadata()
        loader = self.activations_store.get_multi_hook_data_loader()
        with _prefetched(loader, self.cfg.prefetch_llm_batches) as data_provider:
            self.trainer = GBAMultiSAETrainer(
                cfg=self.cfg.to_sae_trainer_config(),
                saes=self.saes,
                hook_names=self.cfg.hook_names_per_sae,
                data_provider=data_provider,
                evaluator=self.evaluator,
                save_checkpoint_fn=self._save_runner_checkpoint_files,
                checkpoint_every=self.checkpoint_every,
                data_parallel=self.data_parallel,
            )
            trainer = self.trainer
            self.resumed_from = resume_and_replay(checkpoint_candidates(self.resume_from), trainer.load_checkpoint,
                                                  trainer, data_provider)
            saes = fit_saving_on_interrupt(self.trainer)
        if is_main_process():
            for name, sae_trainer in self.trainer.trainers.items():
                warn_if_l0_unsettled(sae_trainer, name)
        return saes


class OfflineCacheActivationsRunner(CacheActivationsRunner):
    """SAELens's ``CacheActivationsRunner`` for a model that is already loaded.

    SAELens's ``__init__`` always calls ``load_model(cfg.model_class_name, cfg.model_name)``, i.e.
    downloads by name; this one takes ``model`` instead (and a tokenised ``override_dataset``).
    ``run()`` - sharded writing, consolidation, shuffling - is SAELens's, unchanged, so the cache
    is an ordinary SAELens activation cache (``use_cached_activations=True`` reads it).
    """

    def __init__(self, cfg: CacheActivationsRunnerConfig, model: nn.Module, override_dataset: Any = None) -> None:
        # Not calling super().__init__: it would load the model from the hub (see above).
        from gba_lens.compat import _mk_activations_store

        self.cfg = cfg
        self.model = model  # type: ignore[assignment]
        self.activations_store = _mk_activations_store(model, cfg, override_dataset=override_dataset)  # type: ignore[arg-type]
        self.context_size = self._get_sliced_context_size(cfg.context_size, cfg.seqpos_slice)
        self.features = Features(
            {
                cfg.hook_name: Array2D(shape=(self.context_size, cfg.d_in), dtype=cfg.dtype),
                "token_ids": Sequence(Value(dtype="int32"), length=self.context_size),
            }
        )
