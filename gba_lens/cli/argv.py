"""Command-line arguments made unambiguous before argparse reads them.

argparse lets a repeated option silently replace the earlier one (``--hook a --hook b`` trained
only ``b``). Here a repeated option that takes a list means all the values given
(``--hook a --hook b`` is ``--hook a b``), and any other option given twice is an error.
``--no-NAME`` / ``--no_NAME`` switch a boolean option off (simple_parsing spells it ``--noNAME``).
An option that may be left unset (``bool | None``, e.g. ``--find-l0``) reads ``--NAME`` alone as
on and ``--no-NAME`` as off, as a plain boolean does (simple_parsing would read ``--NAME`` alone as
unset).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

__all__ = ["ArgvError", "normalise_argv"]


class ArgvError(ValueError):
    """A command line that would be read ambiguously."""


def _kinds(options: type) -> dict[str, str]:
    """``{field name: "list" | "bool" | "optional_bool" | "scalar"}`` of an options dataclass."""
    hints = typing.get_type_hints(options)
    kinds = {}
    for f in dataclasses.fields(options):
        hint = hints.get(f.name, Any)
        origin = typing.get_origin(hint)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if origin in (list, tuple) or any(typing.get_origin(a) in (list, tuple) for a in args):
            kinds[f.name] = "list"
        elif hint is bool:
            kinds[f.name] = "bool"
        elif args == [bool]:
            kinds[f.name] = "optional_bool"
        else:
            kinds[f.name] = "scalar"
    return kinds


def normalise_argv(args: list[str], options: type) -> list[str]:
    """``args`` (the arguments after the subcommand) with repeated list options merged,
    ``--no-NAME`` spelled as simple_parsing expects; raises :class:`ArgvError` for a scalar option
    given twice."""
    kinds = _kinds(options)
    # Each option occurrence: (name, spelling, values). Positional tokens before any option stay.
    head: list[str] = []
    occurrences: list[tuple[str | None, str, list[str]]] = []
    for token in args:
        if token.startswith("--") and len(token) > 2:
            spelling, _, inline = token.partition("=")
            name = spelling[2:].replace("-", "_")
            values = [inline] if inline or "=" in token else []
            if name.startswith("no_") and kinds.get(name[3:]) == "bool":
                name, spelling = name[3:], f"--no{name[3:]}"
            elif name.startswith("no_") and kinds.get(name[3:]) == "optional_bool" and not values:
                name, spelling, values = name[3:], f"--{name[3:]}", ["false"]
            occurrences.append((name if name in kinds else None, spelling, values))
        elif occurrences:
            occurrences[-1][2].append(token)
        else:
            head.append(token)
    merged: dict[str, tuple[str, list[str]]] = {}
    order: list[str | tuple[str, list[str]]] = []
    for name, spelling, values in occurrences:
        if name is None:  # not an option of this command: argparse reports it
            order.append((spelling, values))
            continue
        if name in merged:
            if kinds[name] != "list":
                raise ArgvError(f"--{name.replace('_', '-')} is given more than once; give it once")
            merged[name][1].extend(values)
            continue
        merged[name] = (spelling, list(values))
        order.append(name)
    out = list(head)
    for item in order:
        spelling, values = merged[item] if isinstance(item, str) else item
        if isinstance(item, str) and kinds[item] == "optional_bool" and not values:
            values = ["true"]  # simple_parsing reads a bare ``--NAME`` as unset
        out.extend([spelling, *values])
    return out
