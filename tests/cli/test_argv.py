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


@pytest.mark.parametrize("argv, find_l0, resolved", [
    ([], None, True),                       # unset: GBA's default finds the L0
    (["--find-l0"], True, True),            # alone: on, as a plain boolean (simple_parsing: unset)
    (["--no-find-l0"], False, False),       # the paper's rule
    (["--find_l0", "false"], False, False),
    (["--find-l0=true"], True, True),
])
def test_an_option_that_may_be_unset_reads_alone_as_on_and_with_no_as_off(argv, find_l0, resolved):
    from gba_lens.cli import build_parser

    args = build_parser().parse_args(["train-activations", "--activations", "a.safetensors",
                                      *normalise_argv(argv, TrainActivationsArgs)])
    options = next(v for v in vars(args).values() if isinstance(v, TrainActivationsArgs))
    assert options.find_l0 is find_l0
    assert options.gba_options()["find_l0"] is resolved and options.gba_options()["valley_thresholds"] is resolved
    with pytest.raises(ValueError, match="find_l0 moves the targets"):  # on, so not with a requested L0
        build_parser().parse_args(["train-activations", "--activations", "a.safetensors",
                                   *normalise_argv(["--find-l0", "--target-l0", "8"], TrainActivationsArgs)])


def test_cli_trains_both_hooks_of_a_repeated_hook_option(tmp_path):
    from gba_lens import cli

    ns = cli.build_parser().parse_args(cli._normalised(["train", "--hook", "x", "--hook", "y"]))
    assert ns.args.hook == ["x", "y"]
