"""Kept for one release: moved to :mod:`gba_lens.training.lm.runner`."""

from gba_lens.training.lm.runner import *  # noqa: F401,F403
from gba_lens.training.lm.runner import __all__  # noqa: F401
