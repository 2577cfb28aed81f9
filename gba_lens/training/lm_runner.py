"""SAELens's language-model runners, with gba_lens's :class:`GBATrainer` in place of ``SAETrainer``.

SAELens builds its trainer inline: ``LanguageModelSAETrainingRunner.run`` and
``MultiSAETrainingRunner.run`` construct a plain ``SAETrainer`` / ``MultiSAETrainer`` (which in
turn constructs plain ``SAETrainer`` objects), call ``wandb.init`` / ``wandb.finish`` without a
guard and save the final SAE themselves. There is no factory argument to swap the trainer class.
So the narrowest change is to override ``run`` (and nothing else): everything the runners set
up in ``__init__`` - model, ``ActivationsStore`` (streaming, buffering, mixing, special-token
filtering, cached activations), SAE construction from config, SAE metadata, the evaluator used
during training, prefetching - stays SAELens's. The overridden ``run`` differs in three ways:

1. the trainer is a :class:`GBATrainer` (safetensors + JSON checkpoints written atomically,
   never a pickle; W&B failures never stop training; periodic resumable checkpoints);
2. W&B is left to the caller (:func:`gba_lens.training.lm.train_gba_on_model` starts the run
   with a guard and keeps it open to log the held-out evaluation after training);
3. saving is left to the caller too, and an interrupted run (SIGINT / SIGTERM) writes a
   resumable GBATrainer checkpoint (SAELens's handler saves only the data position).

``CacheActivationsRunner`` always loads its model from the hub by name; the subclass here takes
an already-loaded model (the offline stdlib LM, a local bridge) and is otherwise SAELens's.
"""

from __future__ import annotations

import shutil
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from datasets import Array2D, Features, Sequence, Value
from sae_lens import CacheActivationsRunner, LanguageModelSAETrainingRunner
from sae_lens.config import CacheActivationsRunnerConfig
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
from sae_lens.saes.sae import TrainingSAE
from sae_lens.training._interruption import InterruptedException, interrupt_callback
from sae_lens.training.multi_sae_trainer import MultiSAETrainer
from sae_lens.training.prefetch import PrefetchingIterator
from sae_lens.training.sae_trainer import SAETrainer
from torch import nn

from gba_lens.training.trainer import CHECKPOINT_PREFIX, GBATrainer, list_checkpoints


@contextmanager
def _interrupt_handlers() -> Iterator[None]:
    """SAELens's SIGINT/SIGTERM -> ``InterruptedException`` handlers, restored afterwards
    (SAELens leaves them installed); skipped outside the main thread, where ``signal`` fails."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, interrupt_callback)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class GBALanguageModelRunner(LanguageModelSAETrainingRunner):
    """``LanguageModelSAETrainingRunner`` whose ``run`` trains with :class:`GBATrainer`.

    Constructed exactly like SAELens's runner (``cfg``, ``override_dataset``, ``override_model``,
    ``override_sae``), plus ``checkpoint_every`` (steps between resumable checkpoints in
    ``cfg.checkpoint_path``) and ``resume_from`` (a checkpoint directory to continue from).
    ``run()`` returns the trained SAE; the trainer stays available as ``self.trainer``.
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
        resume_from: str | Path | None = None,
    ) -> None:
        super().__init__(cfg, override_dataset, override_model, override_sae)
        self.checkpoint_every = checkpoint_every
        self.resume_from = resume_from
        self.trainer = None

    def run(self) -> TrainingSAE[Any]:  # type: ignore[override]
        self._set_sae_metadata()
        data_provider: Any = self.activations_store
        if self.cfg.prefetch_llm_batches:
            size = 1 if isinstance(self.cfg.prefetch_llm_batches, bool) else self.cfg.prefetch_llm_batches
            data_provider = PrefetchingIterator(iter(self.activations_store), prefetch=size)
        try:
            # The one place that differs from SAELens: GBATrainer instead of SAETrainer.
            self.trainer = GBATrainer(
                cfg=self.cfg.to_sae_trainer_config(),
                sae=self.sae,
                data_provider=data_provider,
                evaluator=self.evaluator,
                save_checkpoint_fn=self.save_checkpoint,
                checkpoint_every=self.checkpoint_every,
            )
            if self.resume_from is not None:
                self.trainer.resume_from(self.resume_from)
                store_state = Path(self.resume_from) / "activations_store_state.safetensors"
                if store_state.exists():  # SAELens's (approximate) data position
                    self.activations_store.load_from_checkpoint(self.resume_from)
            self._compile_sae_if_needed()
            return self.run_trainer_with_interruption_handling(self.trainer)
        finally:
            if isinstance(data_provider, PrefetchingIterator):
                data_provider.close()

    def run_trainer_with_interruption_handling(self, trainer: SAETrainer[Any, Any]) -> TrainingSAE[Any]:
        with _interrupt_handlers():
            try:
                return trainer.fit()
            except (KeyboardInterrupt, InterruptedException):
                if self.cfg.checkpoint_path is not None and isinstance(trainer, GBATrainer):
                    warnings.warn("interrupted: saving a resumable checkpoint")
                    trainer.save_checkpoint(f"{CHECKPOINT_PREFIX}{trainer.steps_completed:09d}")
                raise


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


class GBAMultiSAETrainer(MultiSAETrainer):
    """``MultiSAETrainer`` whose per-SAE trainers are GBATrainers, with guarded W&B calls.

    SAELens's coordinator creates one plain ``SAETrainer`` per SAE in ``__init__``; they hold
    nothing but an (empty) optimiser and counters at that point, so they are replaced right
    after with GBATrainers built from the same per-SAE config. Checkpoints are then written by
    GBATrainer (safetensors, one directory per SAE, in SAELens's multi-SAE layout).
    """

    def __init__(self, *args: Any, checkpoint_every: int = 0, keep_checkpoints: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        per_sae_cfg = replace(self.cfg, n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False)
        self.trainers = {  # type: ignore[assignment]
            name: _PrefixedGBATrainer(cfg=per_sae_cfg, sae=sae, data_provider=iter(()), log_prefix=name)
            for name, sae in self.saes.items()
        }
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self._logging_failed = False

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            if not self._logging_failed:
                warnings.warn(f"W&B logging failed ({exc!r}); training continues without logging.")
            self._logging_failed = True
            self.cfg.logger.log_to_wandb = False

    def _log_train_step(self, step_outputs: dict[str, Any]) -> None:
        self._guarded(super()._log_train_step, step_outputs)

    def _run_and_log_evals(self) -> None:
        self._guarded(super()._run_and_log_evals)

    @property
    def steps_completed(self) -> int:
        return self.n_training_samples // self.cfg.train_batch_size_samples

    def _checkpoint_if_needed(self) -> None:
        super()._checkpoint_if_needed()
        if self.checkpoint_every and self.cfg.checkpoint_path is not None:
            if self.steps_completed % self.checkpoint_every == 0:
                self.save_checkpoint(f"{CHECKPOINT_PREFIX}{self.steps_completed:09d}")
                for old in list_checkpoints(Path(self.cfg.checkpoint_path))[: -self.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: str | Path) -> None:
        super().load_checkpoint(path)
        # GBATrainer stores completed steps; keep the coordinator's counter in step with it.
        self.n_training_steps = self.steps_completed


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
        resume_from: str | Path | None = None,
    ) -> None:
        super().__init__(cfg, override_dataset, override_model, override_saes)
        self.checkpoint_every = checkpoint_every
        self.resume_from = resume_from
        self.trainer = None

    def run(self) -> dict[str, TrainingSAE[Any]]:
        self._set_sae_metadata()
        data_provider: Any = self.activations_store.get_multi_hook_data_loader()
        if self.cfg.prefetch_llm_batches:
            size = 1 if isinstance(self.cfg.prefetch_llm_batches, bool) else self.cfg.prefetch_llm_batches
            data_provider = PrefetchingIterator(data_provider, prefetch=size)
        try:
            self.trainer = GBAMultiSAETrainer(
                cfg=self.cfg.to_sae_trainer_config(),
                saes=self.saes,
                hook_names=self.cfg.hook_names_per_sae,
                data_provider=data_provider,
                evaluator=self.evaluator,
                save_checkpoint_fn=self._save_runner_checkpoint_files,
                checkpoint_every=self.checkpoint_every,
            )
            if self.resume_from is not None:
                self.trainer.load_checkpoint(self.resume_from)
                if (Path(self.resume_from) / "activations_store_state.safetensors").exists():
                    self.activations_store.load_from_checkpoint(self.resume_from)
            with _interrupt_handlers():
                try:
                    return self.trainer.fit()
                except (KeyboardInterrupt, InterruptedException):
                    if self.cfg.checkpoint_path is not None:
                        warnings.warn("interrupted: saving a resumable checkpoint")
                        self.trainer.save_checkpoint(f"{CHECKPOINT_PREFIX}{self.trainer.steps_completed:09d}")
                    raise
        finally:
            if isinstance(data_provider, PrefetchingIterator):
                data_provider.close()


class OfflineCacheActivationsRunner(CacheActivationsRunner):
    """SAELens's ``CacheActivationsRunner`` for a model that is already loaded.

    SAELens's ``__init__`` always calls ``load_model(cfg.model_class_name, cfg.model_name)``, i.e.
    downloads by name; this one takes ``model`` instead (and a tokenised ``override_dataset``).
    ``run()`` - sharded writing, consolidation, shuffling - is SAELens's, unchanged, so the cache
    is an ordinary SAELens activation cache (``use_cached_activations=True`` reads it).
    """

    def __init__(self, cfg: CacheActivationsRunnerConfig, model: nn.Module, override_dataset: Any = None) -> None:
        # Not calling super().__init__: it would load the model from the hub (see above).
        from sae_lens.cache_activations_runner import _mk_activations_store

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
