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

from tqdm.auto import tqdm

from gba_lens.training.checkpoints import load_newest_intact
from gba_lens.training.run_settings import notify

__all__ = ["checkpoint_candidates", "resume_and_replay"]


def checkpoint_candidates(resume_from: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """``resume_from`` (one checkpoint, or several oldest first) as a list of paths."""
    if resume_from is None:
        return []
    if isinstance(resume_from, (str, Path)):
        return [Path(resume_from)]
    return [Path(p) for p in resume_from]


def resume_and_replay(candidates: Sequence[Path], load: Callable[[Path], None], steps_done: Callable[[], int],
                      data_provider: Iterator[Any]) -> Path | None:
    """Load the newest intact of ``candidates`` (see :func:`load_newest_intact`), then draw the
    ``steps_done()`` batches it had trained on from ``data_provider``; returns the checkpoint."""
    checkpoint = load_newest_intact(candidates, load)
    if checkpoint is None:
        return None
    notify(f"resuming the run from {checkpoint} at step {steps_done()} (replaying the data it trained on)")
    for _ in tqdm(range(steps_done()), desc="replaying the data already trained on", leave=False):
        next(data_provider)
    return checkpoint
