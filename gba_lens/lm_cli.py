"""Deprecated location: ``gba-lens train`` / ``gba-lens cache`` live in :mod:`gba_lens.cli.lm`.

Re-exported here for one release.
"""

from gba_lens.cli.lm import cmd_cache, cmd_train, register  # noqa: F401
