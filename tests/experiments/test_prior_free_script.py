"""scripts/prior_free.py: each mode's GBA options (the runs themselves are the page's figures)."""

from pathlib import Path

import pytest

UNIT_MEAN = {"input_norm": "unit_mean", "activation_bias": False}


@pytest.mark.parametrize("mode, expected", [
    ("geometric", {"find_l0": False, "valley_thresholds": False}),  # the paper's rule, pinned
    ("valley-targets", {"valley_thresholds": True, "targets": "valleys"}),
    ("search", {"target_search": True}),
    ("valley-targets+search", {"valley_thresholds": True, "targets": "valleys", "target_search": True}),
    # told the L0 with the paper's options, as target_l0 trained before the fifty-ninth step
    ("told-l0", {"find_l0": False, "valley_thresholds": False, "encoder_init": "random", "firing_worth": 0.0,
                 "idle_groups": False, "anneal_with_lr": False, "encoder_lr_scale": 1.0, "decoder_refit": False,
                 **UNIT_MEAN, "target_l0": 2.5}),
    # told the L0 with every option find_l0 turns on at any hook but the valleys (as target_l0 trains since)
    ("defaults+told-l0", {"valley_thresholds": False, "encoder_init": "data", "firing_worth": 0.5, "idle_groups": True,
                          "anneal_with_lr": True, "encoder_lr_scale": 2.0, "decoder_refit": True, "target_l0": 2.5}),
    # the defaults before anneal_with_lr (docs/experiments/prior_free.md, thirty-seventh step), with the inputs and
    # outputs every run had before the fifty-sixth step
    ("no-anneal", {"valley_thresholds": True, "find_l0": True, "anneal_with_lr": False, "encoder_lr_scale": 1.0,
                   "decoder_refit": False, **UNIT_MEAN}),
    # the defaults before encoder_lr_scale (thirty-eighth step)
    ("one-lr", {"valley_thresholds": True, "find_l0": True, "encoder_lr_scale": 1.0, "decoder_refit": False,
                **UNIT_MEAN}),
    # the defaults before decoder_refit (forty-second step)
    ("no-refit", {"valley_thresholds": True, "find_l0": True, "decoder_refit": False, **UNIT_MEAN}),
    # the defaults with the learned activation offsets (opt-in, thirty-ninth step)
    ("activation-bias", {"valley_thresholds": True, "find_l0": True, "activation_bias": True,
                         "input_norm": "unit_mean"}),
    # the defaults with each input divided by its norm (opt-in, fortieth step)
    ("per-token", {"valley_thresholds": True, "find_l0": True, "input_norm": "per_token", "activation_bias": False}),
])
def test_modes_set_their_options_and_the_settings_are_added(script, mode, expected):
    options = script("prior_free").options
    assert options(mode, 2.5, {}) == expected
    assert options(mode, 2.5, {"gamma_minus": 0.03}) == {**expected, "gamma_minus": 0.03}


def test_every_mode_builds_a_valid_gba_config(script):
    from gba_lens.saes.gba import GBATrainingSAEConfig

    prior_free = script("prior_free")
    for mode in prior_free.MODES:
        cfg = GBATrainingSAEConfig(d_in=8, d_sae=32, **prior_free.options(mode, 2.5, {}))
        assert cfg.target_search == ("search" in mode)
        defaults = cfg.find_l0 or mode == "defaults+told-l0"  # the defaults' options, found or told the L0
        # (told-l0 and valley+told-l0 pin the paper's)
        assert (cfg.target_l0 == 2.5) == mode.endswith("told-l0") and not (cfg.find_l0 and cfg.target_l0)
        # the rule's steps follow the learning rate with find_l0 (the defaults), except where a mode pins them
        assert cfg.anneal_with_lr == (defaults and mode not in ("find-l0", "no-idle-groups", "no-anneal"))
        # the encoder learns faster late in the run with find_l0, except where a mode pins one rate
        faster = defaults and mode not in ("find-l0", "no-idle-groups", "no-anneal", "one-lr")
        assert cfg.encoder_lr_scale == (2.0 if faster else 1.0)
        # only the modes that ask for them; unset, no hook named (synthetic data): off once training starts
        assert (cfg.activation_bias is True) == mode.endswith("activation-bias")
        assert (cfg.input_norm == "per_token") == mode.startswith("per-token")
        # the decoder refitted after the last step with find_l0, except where a mode keeps the defaults before it
        refit = defaults and mode not in ("find-l0", "no-idle-groups", "no-anneal", "one-lr", "no-refit")
        assert cfg.decoder_refit == refit


def test_the_counterexample_reports_each_seeds_l0_and_its_warning(script, capsys):
    """30k samples: the paper's rule is still lowering its L0 from the start's (about 23 of a true 6.85)."""
    script("prior_free").main(["counterexample", "--samples", "30000", "--seeds", "0", "--modes", "geometric"])
    import json

    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["model"] == "counterexample" and row["seeds"] == 1
    assert row["true_l0"] == pytest.approx(6.85, abs=0.01)
    assert len(row["l0_per_seed"]) == 1 and row["l0_per_seed"][0] > 10
    assert row["warned_per_seed"][0].startswith("GBA's L0 was still falling")


def test_the_small_model_reports_each_seeds_figures_and_their_means(script, capsys):
    import json

    script("prior_free").main(["small", "--samples", "25600", "--seeds", "0", "1", "--modes", "valley+find-l0",
                               "--gba", "encoder_init=data"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["model"] == "small" and row["seeds"] == 2 and row["true_l0"] == 2.0
    for key in ("mcc", "f1", "l0", "frr_08", "frr_09"):
        assert len(row[f"{key}_per_seed"]) == 2
        assert row[key] == pytest.approx(sum(row[f"{key}_per_seed"]) / 2, abs=1e-4)
    assert 0 < row["f1"] <= 1 and 0 < row["frr_09"] <= row["frr_08"] <= 1


def test_silent_inputs_reports_each_runs_silent_share_and_leaves_the_trainer_as_it_was(script, capsys):
    import re

    from gba_lens.training.trainer import GBATrainer

    step = GBATrainer.step
    prior_free = str(Path(__file__).resolve().parents[2] / "scripts" / "prior_free.py")
    script("silent_inputs").main([prior_free, "counterexample", "--samples", "30000", "--seeds", "0", "--modes", "geometric"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("silent inputs:")]
    assert len(lines) == 1 and "gba d_in 64 d_sae 128 find_l0 False" in lines[0]
    rows, variance = (float(v) for v in re.findall(r"(\d\.\d+) of the", lines[0]))
    assert 0.0 <= variance <= rows <= 1.0  # a young SAE fires on most inputs; silent ones hold less than their share
    assert GBATrainer.step is step
