"""Studies of the rule's constants: ``--set MODULE.NAME=VALUE`` for the scripts under ``scripts/``.

The constants of GBA's opt-in rules (valley thresholds, targets from the data, a requested L0) are
module constants read when the rule runs, documented where they are defined, and not options a
user should tune. ``docs/experiments/prior_free.md`` measures alternatives to some of them; this
sets one for the runs of a script, in its process, and refuses what it cannot set exactly.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Any

STUDIED_MODULES = ("valley_thresholds", "target_adaptation", "l0_control", "target_search", "coactivation", "data_init",
                   "firing_worth", "idle_groups", "decoder_refit", "refit_check", "threshold_reallocation")
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
        parsed.append((module, f"{module_name}.{name}", name, _typed("--set", text, name, type(current), raw)))
    for module, _, name, value in parsed:
        setattr(module, name, value)
    return {key: value for _, key, _, value in parsed}


def _typed(flag: str, text: str, name: str, kind: type, raw: str) -> int | float:
    """``raw`` as ``kind`` (int or float); a ``ValueError`` naming the assignment when it is not."""
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: {name} is {kind.__name__}, got {raw!r}") from None


def _or_parser_error(parser: argparse.ArgumentParser, parse: Callable[[Sequence[str]], Any],
                     assignments: Sequence[str]) -> Any:
    """``parse(assignments)``; a ``ValueError`` ends the script with the parser's one-line error."""
    try:
        return parse(assignments)
    except ValueError as err:
        parser.error(str(err))


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set MODULE.NAME=VALUE ...`` on a study script's parser (apply with :func:`apply_set_option`)."""
    parser.add_argument("--set", nargs="+", default=[], metavar="MODULE.NAME=VALUE",
                        help="a constant of the rule for these runs, e.g. target_adaptation.MIN_VALLEY_FRACTION=0.05")


def apply_set_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set the constants ``--set`` names; a bad one ends the script with the parser's one-line error."""
    _or_parser_error(parser, set_constants, args.set)


def gba_settings(assignments: Sequence[str]) -> dict[str, int | float | str]:
    """``NAME=VALUE`` assignments of GBA's numeric and named settings (fields of
    :class:`~gba_lens.saes.gba.GBATrainingSAEConfig` such as ``gamma_minus``, ``update_interval`` or
    ``encoder_init``, VALUE of the field's type, a named one among its choices), for a study
    script's GBA runs. Raises ``ValueError`` naming the first bad one."""
    import dataclasses
    import types
    import typing

    from gba_lens.saes.gba import GBATrainingSAEConfig

    def kind(hint: Any) -> Any:  # int, float or a Literal, also where the field may be unset (None)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            hint = inner[0] if len(inner) == 1 else None
        return hint if hint in (int, float) or typing.get_origin(hint) is typing.Literal else None

    hints = typing.get_type_hints(GBATrainingSAEConfig)
    with_defaults = [f.name for f in dataclasses.fields(GBATrainingSAEConfig) if f.default is not dataclasses.MISSING]
    kinds = {name: found for name in with_defaults if (found := kind(hints[name])) is not None}
    settings: dict[str, int | float | str] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        if not sep or name not in kinds:
            raise ValueError(f"--gba {text!r}: expected NAME=VALUE with NAME one of {sorted(kinds)}")
        if typing.get_origin(kinds[name]) is typing.Literal:
            choices = typing.get_args(kinds[name])
            if raw not in choices:
                raise ValueError(f"--gba {text!r}: {name} must be one of {choices}")
            settings[name] = raw
        else:
            settings[name] = _typed("--gba", text, name, kinds[name], raw)
    return settings


def add_gba_option(parser: argparse.ArgumentParser) -> None:
    """``--gba NAME=VALUE ...`` on a study script's parser (read with :func:`gba_settings_of`)."""
    parser.add_argument("--gba", nargs="+", default=[], metavar="NAME=VALUE",
                        help="a GBA setting for the script's GBA runs, e.g. gamma_minus=0.03 or encoder_init=data")


def gba_settings_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, int | float | str]:
    """The settings ``--gba`` names; a bad one ends the script with the parser's one-line error."""
    return _or_parser_error(parser, gba_settings, args.gba)
