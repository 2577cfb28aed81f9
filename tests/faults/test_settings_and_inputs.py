"""Settings changed between runs are refused (each differing setting named), explicit flags
resume or overwrite, and every bad input is refused with one ``error:`` line (exit 2, no
traceback), before a non-finite SAE can be saved."""

import pytest
import torch

from fault_tools import FIGURES
from gba_lens import cli
from gba_lens.data.activations import save_activations

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(1024, 12, generator=g)) * 3
    save_activations(d / "acts.safetensors", acts)
    save_activations(d / "other.safetensors", acts.flip(0))  # same shape and values, other order
    save_activations(d / "flat.safetensors", torch.randn(1000))
    with_nan = acts.clone()
    with_nan[7, 2] = float("nan")
    save_activations(d / "nan.safetensors", with_nan)
    huge = acts.clone()
    huge[:, 3] = 1e30
    save_activations(d / "huge.safetensors", huge)
    (d / "junk.safetensors").write_bytes(b"junk")
    return d


BASE = {"--d-sae": "32", "--n-groups": "4", "--batch-size": "128", "--epochs": "1", "--checkpoint-every": "2"}


def _args(files, out, *extra):
    """The first run's command line; an option of ``extra`` that it already has replaces its value
    (the ones repeated within ``extra`` stay repeated)."""
    base = dict(BASE)
    for i, token in enumerate(extra):
        if token in base and extra.count(token) == 1:
            base.pop(token)
    flat = [x for kv in base.items() for x in kv]
    return ["train-activations", "--activations", str(files / "acts.safetensors"), *flat, "--out", str(out), *extra]


def _refused(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # (a progress bar may precede the error on its line)
    lines = [line[line.index("error:"):] for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def first_run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli.main(_args(files, out)) == 0
    return out


CHANGES = [
    (["--lr", "0.01"], "train.lr: 0.003 -> 0.01"),
    (["--n-groups", "2"], "sae.n_groups: 4 -> 2"),
    (["--gating", "relu"], "sae.gating"),
    (["--batch-size", "64"], "train.batch_size: 128 -> 64"),
    (["--epochs", "3"], "epochs: 1.0 -> 3.0"),
    (["--seed", "1"], "seed: 0 -> 1"),
    (["--highest-target", "0.2"], "sae.highest_target"),
    (["--d-sae", "64"], "sae.d_sae: 32 -> 64"),
    (["--update-interval", "3"], "sae.update_interval"),
]


@pytest.mark.parametrize(("extra", "named"), CHANGES)
def test_changed_setting_is_refused_and_named(files, first_run, capsys, extra, named):
    line = _refused(capsys, _args(files, first_run, *extra))
    assert "other settings" in line and named in line, line
    FIGURES["settings changes refused"] += 1


def test_other_data_of_the_same_shape_is_refused(files, first_run, capsys):
    argv = _args(files, first_run)
    argv[2] = str(files / "other.safetensors")
    line = _refused(capsys, argv)
    assert "activations.path" in line and "sha256" in line
    FIGURES["settings changes refused"] += 1


def test_explicit_resume_anyway_no_resume_and_overwrite(files, first_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(first_run, run)
    assert cli.main(_args(files, run)) == 0  # identical: resumes, one line says so with the step
    assert "resuming the run in" in capsys.readouterr().err
    line = _refused(capsys, _args(files, run, "--no-resume"))
    assert "never reuses or deletes" in line
    FIGURES["settings changes refused"] += 1
    with pytest.warns(UserWarning, match="resume-anyway.*train.lr"):
        assert cli.main(_args(files, run, "--lr", "0.01", "--resume-anyway")) == 0
    assert "resuming the run in" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="removed the previous run's"):
        assert cli.main(_args(files, run, "--lr", "0.02", "--overwrite", "--no-resume")) == 0
    assert "resuming" not in capsys.readouterr().err


BAD = [
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--batch-size", "-1"], "batch_size must be >= 1"),
    (["--batch-size", "5000"], "exceeds the 1024 activations"),
    (["--epochs", "0"], "epochs must be a positive finite"),
    (["--epochs", "-1"], "epochs must be a positive finite"),
    (["--epochs", "nan"], "epochs must be a positive finite"),
    (["--epochs", "inf"], "epochs must be a positive finite"),
    (["--epochs", "0.01"], "less than one batch"),
    (["--checkpoint-every", "-1"], "checkpoint_every must be >= 0"),
    (["--lr", "nan"], "lr must be a positive finite"),
    (["--lr", "0"], "lr must be a positive finite"),
    (["--d-sae", "0"], "d_sae must be >= 1"),
    (["--n-groups", "0"], "n_groups must be >= 1"),
    (["--n-groups", "64"], "n_groups must be in [1, d_sae=32]"),
    (["--lr", "1", "--lr", "2"], "--lr is given more than once"),
    (["--resume-anyway", "--overwrite"], "contradict"),
    (["--highest-target", "nan"], "need 0 < lowest_target <= highest_target <= 1"),
    (["--lowest-target", "0.5"], "need 0 < lowest_target <= highest_target <= 1"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_option_is_refused_in_one_line(files, tmp_path, capsys, extra, message):
    line = _refused(capsys, _args(files, tmp_path / "run", *extra))
    assert message in line, line
    assert not list((tmp_path / "run").rglob("step_*"))
    FIGURES["bad inputs refused"] += 1


@pytest.mark.parametrize(("name", "message"), [
    ("flat.safetensors", "shape (1000,)"), ("nan.safetensors", "NaN/inf activation values (first in row 7)"),
    ("junk.safetensors", "not a readable safetensors"), ("missing.safetensors", "no cached activations"),
])
def test_bad_activation_file_is_refused_in_one_line(files, tmp_path, capsys, name, message):
    argv = _args(files, tmp_path / "run")
    argv[2] = str(files / name)
    assert message in _refused(capsys, argv)
    FIGURES["bad inputs refused"] += 1


@pytest.mark.parametrize("options", [[], ["--find-l0", "true", "--valley-thresholds", "true"]],
                         ids=["paper-rule", "find-l0-valleys"])
def test_activations_too_large_stop_before_a_non_finite_sae_is_saved(files, tmp_path, capsys, options):
    """Also with the options whose statistics read every pre-activation (a histogram once turned a
    non-finite one into a cryptic bincount error)."""
    argv = _args(files, tmp_path / "run", *options)
    argv[2] = str(files / "huge.safetensors")
    line = _refused(capsys, argv)
    assert "non-finite" in line and "no checkpoint had been written" in line, line
    assert "is intact" not in line
    assert not (tmp_path / "run" / "sae").exists()
    FIGURES["bad inputs refused"] += 1


def test_debug_shows_the_traceback(files, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        cli.main([*_args(files, tmp_path / "run", "--batch-size", "0"), "--debug"])


LM = ["train", "--training-tokens", "2048", "--batch-tokens", "512", "--width", "32", "--context-size", "32",
      "--eval-tokens", "256", "--eval-batch-prompts", "4", "--store-batch-prompts", "8", "--buffer-batches", "2",
      "--device", "cpu", "--checkpoint-every", "2"]


def test_a_run_that_left_no_checkpoint_is_not_replaced_by_other_settings(tmp_path, capsys):
    """A run shorter than its checkpoint interval keeps its settings and results, and no checkpoint:
    one with other settings in the same output directory is refused before it replaces them."""
    assert LM[-2] == "--checkpoint-every"
    short = [*LM[:-2], "--checkpoint-every", "1000", "--out", str(tmp_path)]
    assert cli.main(short) == 0
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(("step_", "final_"))]
    exported = {p: p.read_bytes() for p in tmp_path.rglob("*.safetensors") if "checkpoints" not in p.parts}
    assert exported  # the run's SAE
    line = _refused(capsys, [*short, "--lr", "0.01"])
    assert "left no checkpoint" in line and "train.lr: 0.003 -> 0.01" in line and "--overwrite" in line, line
    assert {p: p.read_bytes() for p in exported} == exported  # nothing replaced
    FIGURES["settings changes refused"] += 1
    assert cli.main([*short, "--lr", "0.01", "--overwrite"]) == 0


def test_lm_route_checks_settings_and_inputs_the_same_way(tmp_path, capsys):
    out = ["--out", str(tmp_path / "lm")]
    hooks = ["--hook", "blocks.0.hook_resid_post", "--hook", "blocks.1.hook_resid_post"]
    assert cli.main([*LM, *hooks, *out]) == 0
    line = _refused(capsys, [*LM, *hooks, *out, "--lr", "0.01"])
    assert "train.lr: 0.003 -> 0.01" in line
    line = _refused(capsys, [*LM, "--hook", "blocks.1.hook_resid_post", *out])  # one hook fewer
    assert "saes.blocks.0.hook_resid_post" in line
    assert "never reuses" in _refused(capsys, [*LM, *hooks, *out, "--no-resume"])
    FIGURES["settings changes refused"] += 3
    for extra, message in [(["--hook", "blocks.0.hook_resid_post", "--hook", "blocks.0.hook_resid_post"],
                            "hooks given more than once"),
                           (["--width", "0"], "widths must be integers >= 1"),
                           (["--lr", "inf"], "lr must be a positive finite"),
                           (["--lr-warm-up-steps", "-3"], "lr_warm_up_steps must be >= 0"),
                           (["--log-every", "0"], "log_every must be >= 1")]:
        assert message in _refused(capsys, [*LM, *extra, "--out", str(tmp_path / "bad")]), extra
        FIGURES["bad inputs refused"] += 1
