"""``gba-lens`` (also ``python -m gba_lens``): the command line.

One module per command group, each defining :class:`~gba_lens.cli.command.Command` objects:

    gba-lens recover --preset paper-toy|zipf|resonance     gba_lens/cli/recover.py
    gba-lens compare --preset synthbench|lm                gba_lens/cli/compare.py
    gba-lens train-activations --activations acts.safetensors   gba_lens/cli/train_activations.py
    gba-lens train / gba-lens cache                        gba_lens/cli/lm.py
    gba-lens dashboard                                     gba_lens/cli/dashboard.py

Each command's options are a dataclass; its attribute docstrings are the ``--help`` text.

To add a subcommand, write ``gba_lens/cli/<name>.py`` with an options dataclass, a
``run(options) -> int`` and ``COMMAND = Command("<name>", Options, run)``, then import the module
below and add its ``COMMAND`` to :data:`COMMANDS`.
"""

from __future__ import annotations

import logging
import sys
import warnings

import simple_parsing

from gba_lens.cli import compare, dashboard, recover, train_activations
from gba_lens.cli.argv import normalise_argv
from gba_lens.cli.command import Command
from gba_lens.cli.recover import RecoverArgs, cmd_recover
from gba_lens.cli.train_activations import TrainActivationsArgs, cmd_train_activations


def _lm_commands() -> list[Command]:
    """``train`` and ``cache``. They need the LM training pipeline; if it cannot be imported, the
    other commands still work and the reason is shown as a warning instead of a traceback."""
    try:
        from gba_lens.cli import lm
    except ImportError as exc:
        warnings.warn(f"gba-lens: the train/cache commands are unavailable: {exc}", stacklevel=2)
        return []
    return [lm.TRAIN, lm.CACHE]


# The registration point: the subcommands of ``gba-lens``, in the order ``--help`` lists them.
COMMANDS: list[Command] = [
    recover.COMMAND,
    compare.COMMAND,
    train_activations.COMMAND,
    *_lm_commands(),
    dashboard.COMMAND,
]


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("sae_lens").setLevel(logging.ERROR)


def build_parser() -> simple_parsing.ArgumentParser:
    parser = simple_parsing.ArgumentParser(
        prog="gba-lens", description="Group Bias Adaptation SAEs for SAELens / TransformerLens."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=simple_parsing.ArgumentParser)
    for command in COMMANDS:
        command.add_to(sub)
    return parser


def _normalised(argv: list[str]) -> list[str]:
    """``argv`` with the subcommand's repeated / ``--no-`` options made unambiguous (see
    :mod:`gba_lens.cli.argv`)."""
    by_name = {c.name: c for c in COMMANDS}
    for i, token in enumerate(argv):
        if token in by_name:
            return [*argv[: i + 1], *normalise_argv(argv[i + 1 :], by_name[token].options)]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. A bad input or a failure prints one line, ``error: ...``, and returns 2;
    ``--debug`` (anywhere on the line) shows the traceback instead."""
    _quiet()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    try:
        argv = _normalised(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        ns = parser.parse_args(argv)
        handler = getattr(ns, "handler", None)
        if handler is None:
            parser.error(f"unknown command {ns.command}")
        return int(handler(ns.args) or 0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if debug:
            raise
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        message = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "Command", "RecoverArgs", "TrainActivationsArgs", "build_parser", "cmd_recover",
           "cmd_train_activations", "main"]

if __name__ == "__main__":
    sys.exit(main())
