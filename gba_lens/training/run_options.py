"""Resume and W&B options: one vocabulary, shared by every training route.

:class:`~gba_lens.training.train.TrainConfig` (Python API), :class:`~gba_lens.training.lm.LMTrainConfig`
(``gba-lens train``) and ``gba-lens train-activations`` inherit these fields, so the names, defaults
and meaning are written once. The resume rule itself is :mod:`gba_lens.training.run_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunOptions:
    """Resume and W&B options shared by every training route."""

    resume: bool = True
    """Resume the run in the checkpoint directory if its recorded settings match (false, or --no-resume: start afresh, refusing a directory that holds another run's checkpoints)."""
    resume_anyway: bool = False
    """Continue the run in the checkpoint directory even though its recorded settings differ (with a warning)."""
    overwrite: bool = False
    """Remove the previous run's checkpoints in the checkpoint directory (saying so) and start afresh."""
    wandb_project: str | None = None
    """Log to this W&B project (online iff W&B is configured by key or netrc, else offline; never needs a login; failures never stop training)."""
    wandb_run_name: str | None = None
    """W&B run name."""

    def check_run_options(self) -> None:
        """One-line ``ValueError`` for contradictory resume options."""
        if self.resume_anyway and self.overwrite:
            raise ValueError("resume_anyway and overwrite contradict each other: pass one")
