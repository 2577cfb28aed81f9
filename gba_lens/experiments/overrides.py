"""Studies of the rule's constants: ``--set MODULE.NAME=VALUE`` for the scripts under ``scripts/``.

The constants of GBA's opt-in rules (valley thresholds, targets from the data, a requested L0) are
module constants read when the rule runs, documented where they are defined, and not options a
user should tune. ``docs/experiments/prior_free.md`` measures alternatives to some of them; this
sets one for the runs of a script, in its process, and refuses what it cannot set exactly.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

STUDIED_MODULES = ("valley_thresholds", "target_adaptation", "l0_control")
"""Modules of ``gba_lens.saes`` whose constants a study may set."""


def set_constants(assignments: Sequence[str]) -> dict[str, int | float]:
    """Apply ``MODULE.NAME=VALUE`` assignments (MODULE in :data:`STUDIED_MODULES`, NAME an existing
    upper-case int or float constant, VALUE of that type); returns what was set. Raises
    ``ValueError`` naming the first bad assignment, before setting anything."""
    parsed = []
    for text in assignments:
        target, sep, raw = text.partition("=")
        module_name, dot, name = target.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {text!r}: expected MODULE.NAME=VALUE, "
                             "e.g. target_adaptation.MIN_VALLEY_FRACTION=0.05")
        if module_name not in STUDIED_MODULES:
            raise ValueError(f"--set {text!r}: module must be one of {STUDIED_MODULES}")
        module = importlib.import_module(f"gba_lens.saes.{module_name}")
        current = getattr(module, name, None)
        if not name.isupper() or type(current) not in (int, float):
            raise ValueError(f"--set {text!r}: {module_name} has no int or float constant {name}")
        try:
            value = type(current)(raw)
        except ValueError:
            raise ValueError(f"--set {text!r}: {name} is {type(current).__name__}, got {raw!r}") from None
        parsed.append((module, f"{module_name}.{name}", name, value))
    for module, _, name, value in parsed:
        setattr(module, name, value)
    return {key: value for _, key, _, value in parsed}


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set MODULE.NAME=VALUE ...`` on a study script's parser (apply with :func:`apply_set_option`)."""
    parser.add_argument("--set", nargs="+", default=[], metavar="MODULE.NAME=VALUE",
                        help="a constant of the rule for these runs, e.g. target_adaptation.MIN_VALLEY_FRACTION=0.05")


def apply_set_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set the constants ``--set`` names; a bad one ends the script with the parser's one-line error."""
    try:
        set_constants(args.set)
    except ValueError as err:
        parser.error(str(err))
