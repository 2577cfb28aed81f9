"""Exact resume of a language-model run: load the newest intact checkpoint, then replay the data.

SAELens's ``ActivationsStore`` keeps a shuffle buffer refilled from the model's activations and
shuffled with torch's global generator; its checkpoint records only how many dataset rows were
read, and restoring that (``load_from_checkpoint``) skips rows but not the buffer, so a resumed
run saw other batches than an uninterrupted one. Here the resumed run instead rebuilds the store
from the same seed and draws (and discards) the batches already trained on: the model runs
forward over them again (no SAE training), and every later batch is the one an uninterrupted run
would see, so the resumed run ends bit-identical to it (on the same device and software).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gba_lens.training.checkpoints import load_newest_intact
from gba_lens.training.refit_window import keep_replayed
from gba_lens.training.run_settings import notify

__all__ = ["checkpoint_candidates", "resume_and_replay"]


def checkpoint_candidates(resume_from: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """``resume_from`` (one checkpoint, or several oldest first) as a list of paths."""
    if resume_from is None:
        return []
    if isinstance(resume_from, (str, Path)):
        return [Path(resume_from)]
    return [Path(p) for p in resume_from]


def resume_and_replay(candidates: Sequence[Path], load: Callable[[Path], None], trainer: Any,
                      data_provider: Iterator[Any]) -> Path | None:
    """Load the newest intact of ``candidates`` into ``trainer`` (see :func:`load_newest_intact`),
    then draw the batches it had trained on from ``data_provider`` (and, when W&B logging is on,
    the tokens SAELens's in-training evaluations read from the same store), keeping those in the
    decoder refit's window; returns the checkpoint."""
    checkpoint = load_newest_intact(candidates, load)
    if checkpoint is None:
        return None
    steps = trainer.steps_completed
    notify(f"resuming the run from {checkpoint} at step {steps} (replaying the data it trained on)")
    for step in tqdm(range(steps), desc="replaying the data already trained on", leave=False):
        keep_replayed(trainer, next(data_provider), step)  # the decoder refit's rows, in its window
        _replay_evaluation(trainer, step, data_provider)
    return checkpoint


@torch.no_grad()
def _replay_evaluation(trainer: Any, step: int, data_provider: Iterator[Any]) -> None:
    """SAELens's evaluator reads tokens from the activation store at the steps where the trainer
    evaluates (W&B logging on): read them again, so later batches are the same. Its metrics are
    discarded (they were logged by the killed run)."""
    logger_cfg = trainer.cfg.logger
    every = logger_cfg.wandb_log_frequency * logger_cfg.eval_every_n_wandb_logs
    if not logger_cfg.log_to_wandb or trainer.evaluator is None or (step + 1) % every:
        return
    saes = dict(trainer.saes) if hasattr(trainer, "saes") else {"": trainer.sae}
    for sae in saes.values():
        sae.eval()
    try:
        if hasattr(trainer, "saes"):
            trainer.evaluator(saes=trainer.saes, data_provider=data_provider, hook_names=trainer.hook_names,
                              activation_scalers={n: t.activation_scaler for n, t in trainer.trainers.items()})
        else:
            trainer.evaluator(trainer.sae, data_provider, trainer.activation_scaler)
    finally:
        for sae in saes.values():
            sae.train()
