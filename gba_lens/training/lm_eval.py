"""Kept for one release: moved to :mod:`gba_lens.training.lm.evaluate`."""

from gba_lens.training.lm.evaluate import *  # noqa: F401,F403
from gba_lens.training.lm.evaluate import __all__  # noqa: F401
