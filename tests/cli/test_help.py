"""Every subcommand's ``--help`` renders: its text comes from the options' docstrings, which argparse
formats with ``%`` (a bare ``%`` in a docstring breaks the help of the whole command)."""

import pytest

from gba_lens.cli import COMMANDS, main


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_subcommand_prints_its_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gba-lens {name}")
    assert "--help" in out and "default" in out
