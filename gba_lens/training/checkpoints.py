"""Choosing the checkpoint to resume from, and refusing to save a broken SAE.

A checkpoint directory that fails to load (truncated, bit-flipped or hand-edited file, half a
multi-hook save) is never used and never deleted: it is reported with its path, moved aside as
``corrupt-<name>`` (so later saves and pruning leave it alone) and the previous intact checkpoint
is used instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gba_lens.data.activations import all_finite
from gba_lens.training.state_io import CheckpointError, verify_checksums

__all__ = [
    "CORRUPT_PREFIX",
    "NonFiniteTrainingError",
    "check_finite_sae",
    "load_newest_intact",
]

CORRUPT_PREFIX = "corrupt-"


class NonFiniteTrainingError(ValueError):
    """Training produced NaN/inf SAE parameters; nothing non-finite was saved."""


def load_newest_intact(candidates: Sequence[Path], load: Callable[[Path], None]) -> Path | None:
    """``load`` the newest of ``candidates`` (oldest first) whose files match their checksums and
    that loads; returns it (``None`` without candidates).

    Each one that fails is reported (a warning naming the bad file), moved aside as
    ``corrupt-<name>`` and the next older one is tried. No intact checkpoint at all is a
    :class:`CheckpointError` listing what failed (start afresh explicitly with ``overwrite``).
    """
    failures: list[str] = []
    for path in reversed(list(candidates)):
        try:
            verify_checksums(path)
            load(path)
        except CheckpointError as exc:
            moved = path.with_name(CORRUPT_PREFIX + path.name)
            try:
                os.replace(path, moved)
                where = f"moved aside to {moved} (not deleted)"
            except OSError:
                where = "left in place"
            failures.append(str(exc))
            warnings.warn(f"cannot resume from {path}: {exc}; {where}; trying the previous checkpoint",
                          stacklevel=2)
            continue
        if failures:
            warnings.warn(f"resuming from the older intact checkpoint {path}", stacklevel=2)
        return path
    if failures:
        raise CheckpointError(
            "no intact checkpoint to resume from: " + "; ".join(failures)
            + " (pass overwrite / --overwrite to start afresh)"
        )
    return None


def _non_finite(modules: dict[str, nn.Module]) -> list[str]:
    bad = []
    for owner, module in modules.items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and not all_finite(tensor):
                bad.append(f"{owner}.{name}" if owner else name)
    return bad


def check_finite_sae(sae: nn.Module | dict[str, nn.Module], when: str, last_checkpoint: Any = None) -> None:
    """Raise :class:`NonFiniteTrainingError` if any parameter or buffer of ``sae`` (or of each
    SAE of a ``{name: sae}`` dict) is NaN/inf; called before every save so a broken SAE is never
    written. ``last_checkpoint``: the newest checkpoint on disk (named in the error), if any."""
    modules = sae if isinstance(sae, dict) else {"": sae}
    bad = _non_finite(modules)
    if not bad:
        return
    kept = (f"the last checkpoint, {last_checkpoint}, is intact" if last_checkpoint is not None
            else "no checkpoint had been written")
    raise NonFiniteTrainingError(
        f"the SAE became non-finite ({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} hold NaN/inf) "
        f"{when}; nothing was saved and {kept}. Activations too large for the dtype, or a too high "
        "learning rate, cause this: rescale the activations or lower --lr"
    )
