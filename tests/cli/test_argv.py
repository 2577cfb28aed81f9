"""Repeated options: a list option given twice means all its values; any other is refused."""

import pytest

from gba_lens.cli.argv import ArgvError, normalise_argv
from gba_lens.cli.train_activations import TrainActivationsArgs
from gba_lens.training.lm import LMTrainConfig


def test_repeated_list_option_means_all_values():
    assert normalise_argv(["--hook", "a", "--width", "8", "--hook", "b", "c"], LMTrainConfig) == [
        "--hook", "a", "b", "c", "--width", "8"]
    assert normalise_argv(["--hook=a", "--hook=b"], LMTrainConfig) == ["--hook", "a", "b"]


def test_repeated_scalar_option_is_refused_with_either_spelling():
    with pytest.raises(ArgvError, match="--batch-size is given more than once"):
        normalise_argv(["--batch-size", "4", "--batch_size=8"], TrainActivationsArgs)


def test_no_prefix_switches_a_boolean_off():
    assert normalise_argv(["--no-resume"], TrainActivationsArgs) == ["--noresume"]
    assert normalise_argv(["--no_resume"], LMTrainConfig) == ["--noresume"]


def test_cli_trains_both_hooks_of_a_repeated_hook_option(tmp_path):
    from gba_lens import cli

    ns = cli.build_parser().parse_args(cli._normalised(["train", "--hook", "x", "--hook", "y"]))
    assert ns.args.hook == ["x", "y"]
