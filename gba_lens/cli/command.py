"""A ``gba-lens`` subcommand: a name, an options dataclass and the function that runs it.

The options dataclass's docstring is the command's help, and its attribute docstrings are the
``--help`` text of each option (simple_parsing reads them), so defaults and help exist once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simple_parsing

DASHES = {"add_option_string_dash_variants": simple_parsing.DashVariant.UNDERSCORE_AND_DASH}
"""Every option is accepted with dashes and with underscores (``--d-sae`` and ``--d_sae``)."""


@dataclass(frozen=True)
class Command:
    """One subcommand. ``run(options) -> exit code`` gets an instance of ``options``."""

    name: str
    options: type
    run: Callable[[Any], int]

    def add_to(self, subparsers: Any) -> None:
        """Add this command to ``subparsers`` (from ``simple_parsing.ArgumentParser.add_subparsers``)."""
        doc = self.options.__doc__
        parser = subparsers.add_parser(self.name, help=doc, description=doc, **DASHES)
        parser.add_arguments(self.options, dest="args")
        parser.set_defaults(handler=self.run)
