"""``gba-lens compare --preset synthbench|lm``: GBA against SAELens's architectures.

The options are :class:`gba_lens.experiments.compare.CompareConfig` (its attribute docstrings are
the ``--help``); the work is :func:`gba_lens.experiments.compare.run_compare`.
"""

from __future__ import annotations

from gba_lens.cli.command import Command
from gba_lens.experiments.compare import CompareConfig, run_compare


def cmd_compare(cfg: CompareConfig) -> int:
    run_compare(cfg)
    return 0


COMMAND = Command("compare", CompareConfig, cmd_compare)
