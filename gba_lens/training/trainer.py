"""SAELens's ``SAETrainer``, with the narrow changes gba_lens needs.

We train with SAELens's own loop (same optimiser, scheduler, clipping, evals and W&B metrics for
GBA and the baselines). GBA's bias update lives in the SAE's ``training_forward_pass``, so it
needs no trainer change at all. What this subclass changes, and why:

1. Checkpoints are safetensors + JSON, written atomically, never pickles: SAELens saves the
   trainer state with ``torch.save`` and resuming unpickles it.
2. The step counter stored in a checkpoint is the number of *completed* steps (SAELens
   checkpoints inside the loop before incrementing it, which shifts a resumed run by one step
   and would move GBA's every-T-steps schedule).
3. Periodic "latest" checkpoints (``checkpoint_every`` steps, keeping the newest few), so a killed run
   resumes where it stopped, and a data provider that can seek is moved to the resumed position (and
   the refit's rows before it read again), so the resumed run sees the batches of an uninterrupted one.
4. W&B logging never stops training: a failing ``wandb.log`` is reported once and logging is
   switched off for the rest of the run.
5. Extra logged metrics: NMSE and the dead-neuron fraction.
6. Adam runs torch's fused kernel (:func:`use_fused_adam`): the same update, much less time.
7. What a GBA SAE's options ask of the trainer: those that follow its hook resolved before Adam holds its parameters
   (:mod:`gba_lens.saes.hook_defaults`), the rate over its peak each step (``anneal_with_lr``), the encoder's faster
   group late (``encoder_lr_scale``), the run's last rows (``decoder_refit``).

Items 2-4 and the save-on-interrupt of :func:`fit_saving_on_interrupt` live in :class:`ResumableTraining`, which
the multi-SAE trainer of :mod:`gba_lens.training.lm.runner` shares.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.optim import Adam
from gba_lens.compat import ACTIVATION_SCALER_CFG_FILENAME, SPARSITY_FILENAME
from sae_lens.training._interruption import InterruptedException, interrupt_callback
from sae_lens.training.optim import get_lr_scheduler
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import save_file

from gba_lens.data.activations import all_finite
from gba_lens.data.batches import SeekableBatches
from gba_lens.saes.hook_defaults import settle_hook_options
from gba_lens.training.checkpoints import check_finite_sae
from gba_lens.training.l0_course import L0Course, silent_error
from gba_lens.training.refit_window import RefitWindow
from gba_lens.training.state_io import CheckpointError, atomic_directory, load_state, save_state
from gba_lens.wandb_run import WandbGuard

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state"
CHECKPOINT_PREFIX = "step_"

__all__ = [
    "CHECKPOINT_PREFIX",
    "GBATrainer",
    "ResumableTraining",
    "SeekableBatches",  # kept for one release: moved to gba_lens.data.batches
    "checkpoint_name",
    "fit_saving_on_interrupt",
    "latest_checkpoint",
    "list_checkpoints",
    "use_fused_adam",
]


class ResumableTraining:
    """What GBA's trainers add to a SAELens trainer (``SAETrainer`` or ``MultiSAETrainer``).

    A mixin placed before the SAELens class: guarded W&B calls (:meth:`_safe`), the count of
    completed steps that checkpoints store, and periodic ``step_<n>`` checkpoints in
    ``cfg.checkpoint_path`` every ``checkpoint_every`` steps, keeping the newest
    ``keep_checkpoints``. The subclass calls :meth:`_init_resumable` after SAELens's ``__init__``.
    """

    cfg: Any
    n_training_samples: int

    def _init_resumable(self, checkpoint_every: int, keep_checkpoints: int) -> None:
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self._wandb_guard = WandbGuard()

    # ----------------------------------------------------------------- fault-tolerant logging
    def _safe(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` if W&B logging is on; a failure warns once and turns it off."""
        if not self.cfg.logger.log_to_wandb:
            return None
        result = self._wandb_guard.call("training", fn, *args, **kwargs)
        if not self._wandb_guard.enabled:
            self.cfg.logger.log_to_wandb = False
        return result

    def _log_train_step(self, step_output: Any) -> None:
        self._safe(super()._log_train_step, step_output)  # type: ignore[misc]

    def _run_and_log_evals(self) -> None:
        self._safe(super()._run_and_log_evals)  # type: ignore[misc]

    # ---------------------------------------------------------------------------- checkpoints
    @property
    def steps_completed(self) -> int:
        return self.n_training_samples // self.cfg.train_batch_size_samples

    def _checkpoint_if_needed(self) -> None:
        super()._checkpoint_if_needed()  # type: ignore[misc]
        if self.checkpoint_every and self.cfg.checkpoint_path is not None:
            if self.steps_completed % self.checkpoint_every == 0:
                self.save_checkpoint(checkpoint_name(self.steps_completed))
                self._prune_checkpoints()

    def _prune_checkpoints(self) -> None:
        periodic = list_checkpoints(Path(self.cfg.checkpoint_path))
        for old in periodic[: -self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def use_fused_adam(optimizer: torch.optim.Optimizer) -> bool:
    """Switch SAELens's Adam to torch's fused kernel where torch has one for every parameter (CPU,
    CUDA, ...): the same update in one pass over each parameter instead of about ten (on one CPU
    thread ~7x faster at 512 x 16,384, where Adam is a third of GBA's sparse step). Only before
    the first step (empty state); a checkpoint restores its own setting. Returns whether it switched."""
    try:  # torch's own list (private); CPU and CUDA have had fused Adam since torch 2.4
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:
        supported = {"cpu", "cuda"}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if (not isinstance(optimizer, torch.optim.Adam) or optimizer.state
            or any(group.get("differentiable") for group in optimizer.param_groups)
            or not all(p.device.type in supported and p.dtype.is_floating_point for p in params)):
        return False
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
    return True


ENCODER_LR_FROM = 0.4
"""Share of the run after which a GBA SAE's encoder learns at ``encoder_lr_scale`` times the learning
rate: the point after which ``idle_groups`` moves no neuron (its ``LATEST``). Before it the neurons
decide which features they go for, and a faster encoder there costs the paper's toy features
(docs/experiments/prior_free.md, thirty-eighth step)."""


class GBATrainer(ResumableTraining, SAETrainer):  # type: ignore[type-arg]
    """``SAETrainer`` with safe, atomic, resumable checkpoints and fault-tolerant logging."""

    def __init__(self, *args: Any, checkpoint_every: int = 0, keep_checkpoints: int = 2, **kwargs: Any):
        settle_hook_options(kwargs.get("sae", args[1] if len(args) > 1 else None))  # before SAELens builds Adam
        super().__init__(*args, **kwargs)
        self.encoder_lr_scale = float(getattr(self.sae.cfg, "encoder_lr_scale", 1.0))
        if self.encoder_lr_scale != 1.0:
            self._encoder_in_own_group()
        use_fused_adam(self.optimizer)
        self._init_resumable(checkpoint_every, keep_checkpoints)
        self.l0_course = L0Course(self.cfg.device)
        total, decay = self.cfg.total_training_steps, self.cfg.lr_decay_steps
        self._steps_before_decay = max(1, total - decay if 0 < decay < total else total)  # the check's horizon
        if hasattr(self.sae, "training_horizon"):  # target_search and firing_worth plan by the run's length
            self.sae.training_horizon = total
        self.refit_window = RefitWindow.for_run(self)  # the run's last rows, for decoder_refit

    def _encoder_in_own_group(self) -> None:
        """SAELens's Adam and schedule again, the encoder weights in a second parameter group (the
        first keeps the others, whose learning rate ``lr_share`` reads); :meth:`step` sets its rate.
        Built anew with SAELens's arguments: torch's schedulers hold one base rate per group and
        refuse a group added after them."""
        cfg, encoder = self.cfg, self.sae.W_enc
        others = [p for p in self.sae.parameters() if p is not encoder]
        self.optimizer = Adam([{"params": others}, {"params": [encoder]}], lr=cfg.lr,
                              betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.lr_scheduler = get_lr_scheduler(
            cfg.lr_scheduler_name, lr=cfg.lr, optimizer=self.optimizer, warm_up_steps=cfg.lr_warm_up_steps,
            decay_steps=cfg.lr_decay_steps, training_steps=cfg.total_training_steps, lr_end=cfg.lr_end,
            num_cycles=cfg.n_restart_cycles)

    def encoder_lr_multiplier(self) -> float:
        """The encoder's learning rate over the others' at this step: ``encoder_lr_scale`` from
        ``ENCODER_LR_FROM`` of the run on, 1 before."""
        late = self.n_training_steps >= ENCODER_LR_FROM * self.cfg.total_training_steps
        return self.encoder_lr_scale if late else 1.0

    def _log_sparsity_window(self) -> None:
        import wandb

        def log() -> None:
            window_log = SAETrainer.full_sparsity_window_log(self)
            if window_log:
                wandb.log(window_log, step=self.n_training_steps)

        self._safe(log)

    # fit() logs what these two return without a guard: log here (guarded) and return {}.
    def maybe_reset_sparsity(self) -> dict[str, Any]:
        if self.n_training_steps > 0 and self.n_training_steps % self.cfg.feature_sampling_window == 0:
            self._log_sparsity_window()
            self._reset_running_sparsity_stats()
        return {}

    def full_sparsity_window_log(self) -> dict[str, Any]:
        self._log_sparsity_window()
        return {}

    def step(self, batch: torch.Tensor) -> Any:
        """One step on a raw batch, after checking it (clear errors instead of a NaN run)."""
        d_in = self.sae.cfg.d_in
        if batch.ndim != 2 or batch.shape[-1] != d_in:
            raise ValueError(f"expected a batch of shape [batch, {d_in}], got {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            raise ValueError("empty batch: the data provider returned no activations")
        if not batch.dtype.is_floating_point:
            raise TypeError(f"activations must be floating point, got {batch.dtype}")
        if not all_finite(batch):
            bad = (~torch.isfinite(batch)).any(-1).nonzero().flatten()[:5].tolist()
            last = latest_checkpoint(self.cfg.checkpoint_path)
            kept = f"the last checkpoint, {last}, is intact" if last is not None else "no checkpoint had been written"
            raise ValueError(
                f"NaN/inf activations in training batch {self.steps_completed} (rows {bad}...); "
                f"nothing was trained on this batch and {kept}"
            )
        if self.encoder_lr_scale != 1.0:  # the encoder's own rate, this step
            others, encoder = self.optimizer.param_groups
            encoder["lr"] = others["lr"] * self.encoder_lr_multiplier()
        controller = getattr(self.sae, "bias_adaptation", None)
        if controller is not None:  # anneal_with_lr: the bias rule's steps follow the learning rate
            controller.lr_share = self.lr_share()
        output = super().step(batch)
        if self.refit_window is not None and self.refit_window.keep(output.sae_in, self):
            self.refit_window.refit(self)
        density = getattr(self.sae, "step_density", None)  # a GBA SAE's L0 / d_sae of this step
        if density is not None:
            self.l0_course.add((self.n_training_steps + 1) / self._steps_before_decay, density, self.sae.cfg.d_sae)
            control = self.sae.bias_adaptation.l0_control
            if control is not None and control.finds_l0:  # its target scale, over the whole run
                run_fraction = (self.n_training_steps + 1) / self.cfg.total_training_steps
                self.l0_course.add_scale(run_fraction, control.log_scale)
                if self.l0_course.counts_silent(run_fraction):  # what the inputs no latent fires on leave
                    silent, variance, _ = silent_error(output.sae_in, output.sae_out, output.feature_acts)
                    self.l0_course.add_silent(run_fraction, silent, variance)
        return output

    def lr_share(self) -> float:
        """This step's learning rate over its peak (the configured ``lr``): 1 until the warm-up is over,
        then whatever the schedule does (SAELens's linear decay over D steps: 1 - i / D at its i-th step)."""
        if self.n_training_steps < self.cfg.lr_warm_up_steps:
            return 1.0
        return min(1.0, self.optimizer.param_groups[0]["lr"] / self.cfg.lr)

    def unsettled_l0(self) -> str | None:
        """One line when this GBA SAE's L0 had not settled at the end of training: a ``target_l0``
        request missed (:meth:`L0Control.unmet_request`), a found L0's targets still moving (``find_l0``),
        or the paper rule's L0 still falling (:mod:`l0_course`)."""
        control = getattr(getattr(self.sae, "bias_adaptation", None), "l0_control", None)
        if control is None:
            return self.l0_course.still_falling()
        if control.finds_l0:
            return self.l0_course.found_l0_unsettled(control.found_bound_reached())
        return control.unmet_request()

    @torch.no_grad()
    def build_train_step_log_dict(self, output: Any, n_training_samples: int) -> dict[str, Any]:
        log = super().build_train_step_log_dict(output, n_training_samples)
        # SAELens's explained variance is 1 - sum of squared errors / total variance: NMSE is derived.
        log["metrics/nmse"] = 1.0 - log["metrics/explained_variance"]
        log["sparsity/dead_fraction"] = self.dead_neurons.float().mean().item()
        return log

    # ---------------------------------------------------------------------------- checkpoints
    def save_checkpoint(
        self,
        checkpoint_name: str,
        base_path: Path | str | None = None,
        wandb_aliases: list[str] | None = None,
    ) -> None:
        base = base_path if base_path is not None else self.cfg.checkpoint_path
        if base is None:
            return
        target = Path(base) / checkpoint_name
        check_finite_sae(self.sae, f"after {self.steps_completed} steps", latest_checkpoint(base))
        # Everything, the runner's files included, is written before the one rename.
        with atomic_directory(target) as tmp:
            weights_path, cfg_path = self.write_checkpoint_files(tmp)
            if self.save_checkpoint_fn is not None:
                self.save_checkpoint_fn(checkpoint_path=tmp)
        if self.cfg.logger.log_to_wandb:
            self._safe(
                self.cfg.logger.log,
                self,
                target / weights_path.name,
                target / cfg_path.name,
                sparsity_path=target / SPARSITY_FILENAME,
                wandb_aliases=wandb_aliases,
            )

    def write_checkpoint_files(self, directory: Path) -> tuple[Path, Path]:
        """The SAE, its sparsity and the trainer state into ``directory`` (no renaming, no W&B);
        returns SAELens's weights and cfg paths."""
        weights_path, cfg_path = self.sae.save_model(str(directory))
        save_file({"sparsity": self.log_feature_sparsity}, str(Path(directory) / SPARSITY_FILENAME))
        self.save_trainer_state(Path(directory))
        return Path(weights_path), Path(cfg_path)

    def save_trainer_state(self, checkpoint_path: Path) -> None:
        checkpoint_path = Path(checkpoint_path)
        checkpoint_path.mkdir(parents=True, exist_ok=True)
        save_state(
            checkpoint_path,
            TRAINER_STATE,
            {
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": _plain_scheduler_state(self.lr_scheduler.state_dict()),
                "n_training_samples": self.n_training_samples,
                "n_training_steps": self.steps_completed,
                "act_freq_scores": self.act_freq_scores,
                "n_forward_passes_since_fired": self.n_forward_passes_since_fired,
                "n_frac_active_samples": self.n_frac_active_samples,
                "started_fine_tuning": self.started_fine_tuning,
                "l0_course": self.l0_course.state_dict(),
                "coefficient_schedulers": {
                    name: s.state_dict() for name, s in self.coefficient_schedulers.items()
                },
            },
        )
        self.activation_scaler.save(str(checkpoint_path / ACTIVATION_SCALER_CFG_FILENAME))

    def load_trainer_state(self, checkpoint_path: Path | str) -> None:
        checkpoint_path = Path(checkpoint_path)
        state = load_state(checkpoint_path, TRAINER_STATE, device=self.cfg.device)
        scaler_path = checkpoint_path / ACTIVATION_SCALER_CFG_FILENAME
        if scaler_path.exists():
            self.activation_scaler.load(scaler_path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.n_training_samples = state["n_training_samples"]
        self.n_training_steps = state["n_training_steps"]
        self.act_freq_scores = state["act_freq_scores"]
        self.n_forward_passes_since_fired = state["n_forward_passes_since_fired"]
        self.n_frac_active_samples = state["n_frac_active_samples"]
        self.started_fine_tuning = state["started_fine_tuning"]
        if "l0_course" in state:  # checkpoints written before it existed resume without it
            self.l0_course.load_state_dict(state["l0_course"])
        for name, sched_state in state["coefficient_schedulers"].items():
            self.coefficient_schedulers[name].load_state_dict(sched_state)
        # SAELens's milestone checkpoints already passed must not fire again.
        self.checkpoint_thresholds = [t for t in self.checkpoint_thresholds if t > self.n_training_samples]
        if self.refit_window is not None:  # its rows before the resumption, read again where the stream can seek
            self.refit_window.reread(self)
        if isinstance(self.data_provider, SeekableBatches):
            self.data_provider.seek(self.n_training_steps)

    def resume_from(self, checkpoint_path: Path | str) -> None:
        """Load SAE weights (with the GBA controller state) and trainer state from a checkpoint."""
        checkpoint_path = Path(checkpoint_path)
        cfg_file = checkpoint_path / "cfg.json"
        if not cfg_file.exists():
            raise CheckpointError(f"{checkpoint_path} has no cfg.json: not a training checkpoint")
        try:
            saved_arch = json.loads(cfg_file.read_text()).get("architecture")
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise CheckpointError(f"corrupted checkpoint file {cfg_file}: {exc}") from exc
        if saved_arch != self.sae.cfg.architecture():
            raise CheckpointError(
                f"checkpoint {checkpoint_path} holds a {saved_arch!r} SAE, "
                f"but this run trains {self.sae.cfg.architecture()!r}"
            )
        try:
            self.sae.load_weights_from_checkpoint(checkpoint_path)
        except Exception as exc:  # safetensors or shape errors
            raise CheckpointError(f"cannot load SAE weights from {checkpoint_path}: {exc}") from exc
        self.load_trainer_state(checkpoint_path)


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


def warn_if_l0_unsettled(trainer: GBATrainer, label: str = "") -> None:
    """Warn with :meth:`GBATrainer.unsettled_l0`'s line (after ``label: ``), if it has one."""
    message = trainer.unsettled_l0()
    if message is not None:
        warnings.warn(f"{label}: {message}" if label else message, stacklevel=3)


def fit_saving_on_interrupt(trainer: ResumableTraining) -> Any:
    """``trainer.fit()``; an interrupt (Ctrl-C, SIGTERM) first writes a resumable checkpoint.

    SAELens's own interruption handler saves only the data position; this saves the whole
    training state, as a periodic checkpoint would, when the trainer has a checkpoint path.
    """
    with _interrupt_handlers():
        try:
            return trainer.fit()  # type: ignore[attr-defined]
        except (KeyboardInterrupt, InterruptedException):
            if trainer.cfg.checkpoint_path is not None:
                warnings.warn("interrupted: saving a resumable checkpoint")
                trainer.save_checkpoint(checkpoint_name(trainer.steps_completed))
            raise


def checkpoint_name(steps_completed: int) -> str:
    """Name of the periodic checkpoint after ``steps_completed`` steps (sorts by step)."""
    return f"{CHECKPOINT_PREFIX}{steps_completed:09d}"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete periodic checkpoints in ``directory``, oldest first."""
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX))


def latest_checkpoint(directory: Path | str | None) -> Path | None:
    if directory is None:
        return None
    found = list_checkpoints(Path(directory))
    return found[-1] if found else None


def _plain_scheduler_state(state: dict[str, Any]) -> dict[str, Any]:
    # LambdaLR & co. keep lambdas as None when they are plain functions; drop anything else that
    # is not data (it is rebuilt from the config on resume).
    return {k: v for k, v in state.items() if not callable(v)}

