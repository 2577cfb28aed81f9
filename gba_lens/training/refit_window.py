"""The run's last rows, kept for the least-squares decoder after its last step (``decoder_refit``).

gba_lens's trainers keep the rows of the steps that reach into the run's last ``rows`` samples (whole
steps: data-parallel ranks keep between them the rows one process would), on the host, and after the
last step refit the SAE's decoder on them (:func:`gba_lens.saes.decoder_refit.refit_decoder`). The
rows are not in checkpoints (up to 512 MiB): a run resumed inside them reads the ones before the
resumption again, from a data stream that can seek (:meth:`RefitWindow.reread`) or from the batches a
language-model run replays (:func:`keep_replayed`), and refits as an uninterrupted run. From any other
stream it refits on the rows since the resumption and says so. A run whose rows are too few for a refit to
reconstruct rows it did not read better (``refit_check``) says so once and keeps its decoder.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from gba_lens.data.batches import can_seek
from gba_lens.saes import refit_check
from gba_lens.saes.decoder_refit import refit_decoder, rows_to_keep

logger = logging.getLogger(__name__)


class RefitWindow:
    """The last ``rows`` samples of a trainer's run (global counts; the run's length and steps are its cfg's)."""

    def __init__(self, rows: int):
        self.rows = rows
        self.kept: list[torch.Tensor] = []
        self.whole = True  # False: the run resumed inside the window
        self.result: dict[str, float] | None = None  # the refit's rows and errors, once it ran

    @classmethod
    def for_run(cls, trainer: Any) -> RefitWindow | None:
        """The window of ``trainer``'s run (None without ``decoder_refit``)."""
        sae = trainer.sae
        if not getattr(sae.cfg, "decoder_refit", False):
            return None
        return cls(rows_to_keep(trainer.cfg.total_training_samples, sae.cfg.d_in))

    def keep(self, rows: torch.Tensor, trainer: Any) -> bool:
        """Keep a step's rows (this rank's, as the SAE read them) if the step reaches into the window, just
        after ``trainer``'s step on them. True after the run's last step."""
        # SAELens counted this rank's rows; a data-parallel run's counter adds the other ranks' after the step
        samples_after = trainer.n_training_samples + len(rows) * (getattr(trainer, "world", 1) - 1)
        return self._keep(rows, trainer.cfg.total_training_samples - samples_after, trainer)

    def keep_trained(self, batch: torch.Tensor, step: int, trainer: Any) -> None:
        """Keep the rows of ``batch`` (this rank's, raw), which the run trained on at ``step`` before it
        resumed, if that step reaches into the window; read again in the run's order, before its next step."""
        samples_left = trainer.cfg.total_training_samples - (step + 1) * trainer.cfg.train_batch_size_samples
        if samples_left < self.rows:  # scaled as SAETrainer.step scales a batch
            self._keep(trainer.activation_scaler(batch.to(trainer.sae.device)), samples_left, trainer)

    def _keep(self, rows: torch.Tensor, samples_left: int, trainer: Any) -> bool:
        if samples_left < self.rows:
            if not self.kept:  # the window's first step, unless the run resumed inside it
                self.whole = samples_left + trainer.cfg.train_batch_size_samples >= self.rows
            self.kept.append(rows.detach().to("cpu", torch.float32))
        return samples_left <= 0

    def reread(self, trainer: Any) -> None:
        """On resumption: read the window's steps that the run took before it stopped again from ``trainer``'s
        data stream, if it can seek (reading them in order leaves it at the run's next batch); a stream that
        cannot is not read."""
        stream, steps, batch = trainer.data_provider, trainer.n_training_steps, trainer.cfg.train_batch_size_samples
        first = max(0, (trainer.cfg.total_training_samples - self.rows) // batch)  # the window's first step
        if first >= steps or not can_seek(stream):
            return
        stream.seek(first)
        for step in range(first, steps):
            self.keep_trained(next(stream), step, trainer)

    def refit(self, trainer: Any) -> dict[str, float]:
        """Refit the decoder of ``trainer``'s SAE on the kept rows (and let them go), logged as ``trainer``
        logs (W&B: the rows' squared error over their energy before and after); the refit's rows and errors."""
        rows = torch.cat(self.kept)
        self.kept = []
        if not self.whole:
            warnings.warn(f"decoder_refit reads the rows since the run resumed, not all of its last {self.rows}: "
                          "the run's data stream cannot seek back to the earlier ones", stacklevel=3)
        self.result = result = refit_decoder(trainer.sae, rows)
        if not result["refitted"]:
            _skipped(f"the run's last {int(result['rows'])} rows give its live latents "
                     f"{result['firings_per_input']:.2f} firings per input each, and a copy refitted without every "
                     f"{refit_check.HELD_OUT}th reconstructed those rows no better than the trained SAE (squared "
                     f"error over energy {result['held_out_trained']:.5f} -> {result['held_out_fitted']:.5f}): "
                     "too few for a least-squares decoder", stacklevel=4)
            return result
        before, after = result["error_before"], result["error_after"]
        logger.info("decoder refitted on %d rows: squared error over energy %.5f -> %.5f", int(result["rows"]), before,
                    after)
        if trainer.cfg.logger.log_to_wandb:
            import wandb

            prefix = f"{trainer.log_prefix}/" if getattr(trainer, "log_prefix", None) else ""  # a multi-SAE run's SAE
            logged = {f"{prefix}gba/refit_error_before": before, f"{prefix}gba/refit_error_after": after}
            trainer._safe(wandb.log, logged, step=trainer.n_training_steps)
        return result


def _skipped(why: str, stacklevel: int) -> None:
    warnings.warn(f"decoder_refit is skipped: {why}; the trained decoder is kept (decoder_refit=False turns it "
                  "off without this warning)", stacklevel=stacklevel)


def keep_replayed(trainer: Any, batch: Any, step: int) -> None:
    """A batch that ``trainer`` (a GBATrainer or gba_lens's multi-SAE trainer: then one batch per hook)
    trained on at ``step``, drawn again by a resumed run: each refit window keeps its rows."""
    trainers = getattr(trainer, "trainers", None)
    if trainers is None:
        if getattr(trainer, "refit_window", None) is not None:
            trainer.refit_window.keep_trained(batch, step, trainer)
        return
    for name, one in trainers.items():
        keep_replayed(one, batch[trainer.hook_names[name]], step)
