"""Kept for one release: moved to :mod:`gba_lens.training.lm.sources`."""

from gba_lens.training.lm.sources import *  # noqa: F401,F403
from gba_lens.training.lm.sources import __all__  # noqa: F401
