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


@pytest.mark.parametrize("flag, values, text", [
    ("--input-norm", "{unit_mean,per_token,none}", "``unit_mean``: inputs centred"),
    ("--refit-error", "{absolute,relative}", "What ``decoder_refit`` lowers")])
def test_an_option_unset_by_default_lists_its_values_and_refuses_others_by_name(flag, values, text, capsys):
    from gba_lens.cli import build_parser

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert f"{flag} {values}" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("--") and f"{flag} {values}" in line)
    assert lines[header + 1].strip().startswith(text)  # its docstring is its help
    assert getattr(build_parser().parse_args(["train"]).args, flag[2:].replace("-", "_")) is None  # unset
    with pytest.raises(SystemExit):
        main(["train", flag, "bogus"])
    assert "invalid choice: 'bogus' (choose from" in capsys.readouterr().err
