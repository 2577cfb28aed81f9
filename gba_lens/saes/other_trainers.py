"""What GBA's options need of a trainer other than gba_lens's (SAELens's own ``SAETrainer`` and runners).

gba_lens's trainers give a GBA SAE the run's length (``training_horizon``), the learning rate over
its peak, and the encoder its own learning rate. Another trainer gives it none of these: an option
that cannot work without them stops the run with a one-line error, and one that can says once what
it does instead (``firing_worth``, ``idle_groups`` and ``anneal_with_lr`` say so in their own modules).
"""

from __future__ import annotations

import warnings
from typing import Any


def check_other_trainer(sae: Any) -> None:
    """On a training step of ``sae`` (a ``GBATrainingSAE``) whose run's length no trainer has set."""
    if sae.bias_adaptation.target_search is not None:
        raise ValueError("target_search needs the run's length in optimiser steps: train with gba_lens's "
                         "trainers (train_sae, GBATrainer) or set sae.training_horizon")
    if sae.cfg.encoder_lr_scale != 1.0 and not getattr(sae, "_warned_encoder_lr", False):
        sae._warned_encoder_lr = True
        warnings.warn(f"encoder_lr_scale={sae.cfg.encoder_lr_scale:g} trains the encoder faster late in the run with "
                      "gba_lens's trainers (GBATrainer, train_sae); this trainer keeps one learning rate", stacklevel=3)
    if getattr(sae.cfg, "decoder_refit", False) and not getattr(sae, "_warned_refit", False):
        sae._warned_refit = True
        warnings.warn("decoder_refit refits the decoder after the last step of gba_lens's trainers (GBATrainer, "
                      "train_sae); this trainer keeps the trained decoder", stacklevel=3)
