"""A checkpoint directory records its run's settings; a new run resumes, refuses or overwrites
by the table of :mod:`gba_lens.training.run_settings`; nothing non-finite is ever saved."""

import json
from dataclasses import fields

import pytest
import torch

from gba_lens.saes.gba_options import EXECUTION_OPTIONS, OPTIONS_ADDED_LATER, GBAOptions
from gba_lens.data.batches import SeededBatches, TensorBatches
from gba_lens.training.checkpoints import NonFiniteTrainingError
from gba_lens.training.run_settings import (
    SETTINGS_FILENAME,
    RunSettingsError,
    data_fingerprint,
    prepare_run_directory,
    settings_differences,
)
from gba_lens.training.train import TrainConfig, train_sae
from gba_lens.training.trainer import list_checkpoints
from training_builders import relu_sampler, tiny_gba_sae

SETTINGS = {"train": {"lr": 0.003, "batch_size": 64}, "data": {"path": "a"}}


def _with_checkpoint(tmp_path, settings=SETTINGS):
    assert prepare_run_directory(tmp_path, settings) is False  # empty: a fresh run, settings recorded
    (tmp_path / "step_000000004").mkdir()
    return tmp_path


def test_identical_settings_resume_and_different_ones_are_refused_by_name(tmp_path):
    run = _with_checkpoint(tmp_path)
    assert json.loads((run / SETTINGS_FILENAME).read_text()) == SETTINGS
    assert prepare_run_directory(run, SETTINGS) is True
    changed = {"train": {"lr": 0.01, "batch_size": 64}, "data": {"path": "b"}}
    with pytest.raises(RunSettingsError, match=r'data\.path: "a" -> "b"; train\.lr: 0\.003 -> 0\.01'):
        prepare_run_directory(run, changed)
    assert (run / "step_000000004").exists()  # refusing touches nothing


def test_a_run_that_left_no_checkpoint_is_not_replaced_by_one_with_other_settings(tmp_path):
    """A run shorter than its checkpoint interval (or stopped before its first) leaves only its settings;
    a run with the same settings starts afresh there, one with others is refused unless it overwrites."""
    assert prepare_run_directory(tmp_path, SETTINGS) is False
    assert prepare_run_directory(tmp_path, SETTINGS) is False  # the same run again: nothing lost
    changed = {**SETTINGS, "train": {"lr": 0.01, "batch_size": 64}}
    with pytest.raises(RunSettingsError, match=r"left no checkpoint .*train\.lr: 0\.003 -> 0\.01.*--overwrite"):
        prepare_run_directory(tmp_path, changed)
    assert json.loads((tmp_path / SETTINGS_FILENAME).read_text()) == SETTINGS  # refusing touches nothing
    with pytest.warns(UserWarning, match=r"no checkpoint: starting afresh \(train\.lr: 0\.003 -> 0\.01\)"):
        assert prepare_run_directory(tmp_path, changed, overwrite=True) is False
    assert json.loads((tmp_path / SETTINGS_FILENAME).read_text()) == changed


def test_resume_anyway_continues_and_records_the_new_settings(tmp_path):
    run = _with_checkpoint(tmp_path)
    changed = {**SETTINGS, "seed": 1}
    with pytest.warns(UserWarning, match=r"resume-anyway.*seed: \(unset\) -> 1"):
        assert prepare_run_directory(run, changed, resume_anyway=True) is True
    assert json.loads((run / SETTINGS_FILENAME).read_text())["seed"] == 1


def test_no_resume_refuses_another_runs_checkpoints_unless_overwrite(tmp_path):
    run = _with_checkpoint(tmp_path)
    with pytest.raises(RunSettingsError, match="never reuses or deletes"):
        prepare_run_directory(run, SETTINGS, resume=False)
    with pytest.warns(UserWarning, match="removed the previous run's 1 checkpoint"):
        assert prepare_run_directory(run, {"new": True}, resume=False, overwrite=True) is False
    assert not (run / "step_000000004").exists()
    assert json.loads((run / SETTINGS_FILENAME).read_text()) == {"new": True}
    with pytest.raises(RunSettingsError, match="contradict"):
        prepare_run_directory(run, SETTINGS, resume_anyway=True, overwrite=True)


def test_checkpoints_without_recorded_settings_are_not_resumed_blindly(tmp_path):
    (tmp_path / "step_000000004").mkdir()
    with pytest.raises(RunSettingsError, match="no readable run_settings.json"):
        prepare_run_directory(tmp_path, SETTINGS)
    (tmp_path / SETTINGS_FILENAME).write_text("{not json")
    with pytest.raises(RunSettingsError, match="no readable"):
        prepare_run_directory(tmp_path, SETTINGS)


def test_fingerprint_and_differences():
    x = torch.randn(1000, 4)
    assert data_fingerprint(x) == data_fingerprint(x.clone())
    assert data_fingerprint(x) != data_fingerprint(x.flip(0))
    assert data_fingerprint(x)["shape"] == [1000, 4]
    assert settings_differences({"a": (1, 2)}, {"a": [1, 2]}) == []  # as JSON reads them back


# The GBA options recorded by the first run records; every later one must resume such a record
# when it is off (OPTIONS_ADDED_LATER), or every earlier run would be refused.
FIRST_RECORDED_OPTIONS = {"n_groups", "highest_target", "lowest_target", "update_interval", "targets", "gating"}
SOME_OTHER_VALUE = {"valley_thresholds": True, "target_l0": 8.0, "target_search": True, "encoder_regression": 0.01,
                    "find_l0": True, "encoder_init": "data", "firing_worth": 0.3, "idle_groups": True,
                    "anneal_with_lr": True, "encoder_lr_scale": 2.0, "activation_bias": True,
                    "input_norm": "per_token", "decoder_refit": True, "refit_error": "relative"}


def test_every_option_added_after_the_first_records_is_listed_with_its_default():
    later = {f.name: f.default for f in fields(GBAOptions)
             if f.name not in FIRST_RECORDED_OPTIONS | set(EXECUTION_OPTIONS)}
    # Unset, these are resolved: on by default since the targets' level comes from the data (and the
    # neurons start at inputs; refit_error, input_norm and activation_bias from the SAE's hook); the runs
    # recorded before they existed trained with the paper's rule (the absolute error, unit-mean inputs).
    resolved = ("find_l0", "valley_thresholds", "encoder_init", "firing_worth", "idle_groups", "anneal_with_lr",
                "encoder_lr_scale", "decoder_refit", "refit_error", "input_norm", "activation_bias")
    assert {name: later[name] for name in resolved} == dict.fromkeys(resolved)
    assert OPTIONS_ADDED_LATER == later | {"find_l0": False, "valley_thresholds": False, "encoder_init": "random",
                                           "firing_worth": 0.0, "idle_groups": False, "anneal_with_lr": False,
                                           "encoder_lr_scale": 1.0, "decoder_refit": False,
                                           "refit_error": "absolute", "input_norm": "unit_mean",
                                           "activation_bias": False}


@pytest.mark.parametrize("name", sorted(OPTIONS_ADDED_LATER))
def test_a_record_from_before_an_option_existed_matches_only_the_option_off(name):
    old = {"gba": {"n_groups": 10}}  # written before the option existed
    assert settings_differences(old, {"gba": {"n_groups": 10, name: OPTIONS_ADDED_LATER[name]}}) == []
    on = SOME_OTHER_VALUE[name]
    assert settings_differences(old, {"gba": {"n_groups": 10, name: on}}) == [
        f"gba.{name}: (unset) -> {json.dumps(on)}"]


def _cfg(tmp_path, **kw):
    return TrainConfig(**{"total_samples": 16 * 32, "batch_size": 32, "checkpoint_dir": str(tmp_path),
                          "checkpoint_every": 4, **kw})


def test_python_api_applies_the_same_rules(tmp_path):
    sample = relu_sampler(6)
    train_sae(tiny_gba_sae(6, 12, n_groups=2), SeededBatches(sample, 32), _cfg(tmp_path))
    with pytest.raises(RunSettingsError, match="train.lr"):
        train_sae(tiny_gba_sae(6, 12, n_groups=2), SeededBatches(sample, 32), _cfg(tmp_path, lr=0.1))
    with pytest.raises(RunSettingsError, match="sae.n_groups: 2 -> 3"):
        train_sae(tiny_gba_sae(6, 12, n_groups=3), SeededBatches(sample, 32), _cfg(tmp_path))
    with pytest.raises(RunSettingsError, match="data.seed: 0 -> 1"):
        train_sae(tiny_gba_sae(6, 12, n_groups=2), SeededBatches(sample, 32, seed=1), _cfg(tmp_path))
    with pytest.raises(RunSettingsError, match="never reuses"):
        train_sae(tiny_gba_sae(6, 12, n_groups=2), SeededBatches(sample, 32), _cfg(tmp_path, resume=False))


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(total_samples=-1), dict(checkpoint_every=-1),
                                 dict(lr=float("nan")), dict(lr=0.0), dict(batch_size=2.5),
                                 dict(total_samples=8, batch_size=16), dict(resume_anyway=True, overwrite=True)])
def test_train_config_refuses_bad_numbers(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_non_finite_sae_is_never_checkpointed_and_the_error_names_the_intact_one(tmp_path):
    acts = torch.relu(torch.randn(16 * 32, 6))
    acts[8 * 32 + 5 :, 2] = 3e37  # from batch 8 on: finite inputs that overflow the SAE
    data = TensorBatches(acts, 32)
    data._perm, data._epoch = torch.arange(acts.shape[0]), 0  # in order
    with pytest.raises(NonFiniteTrainingError, match=r"step_000000008, is intact"):
        train_sae(tiny_gba_sae(6, 12, n_groups=2), data, _cfg(tmp_path))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000004", "step_000000008"]
