"""scripts/l0_drift.py: the per-group L0 probe along training (docs/experiments/prior_free.md)."""

import json

import pytest

from gba_lens.training.l0_course import FALL_TOLERANCE


def test_probes_split_the_l0_by_ground_truth_and_follow_the_rule(script, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    script("l0_drift").main(["zipf", "--samples", "61440", "--every", "20", "--probe", "2000"])
    *lines, check = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["step"] for line in lines] == [0, 20, 40, 60]  # every 20 steps, and after the last
    # the trainer's end-of-run L0 check: 60 steps, the last 18 decaying (the zipf preset's schedule),
    # so the windows are the two tenths of the first 42: steps 34-37 and 38-42
    course = check["l0_course"]
    assert course["steps"] == [4, 5] and course["windows"][0] > 0
    assert course["still_falling"] == (course["windows"][1] < course["windows"][0] * (1 - FALL_TOLERANCE))
    first, last = lines[0], lines[-1]
    # before any step the biases are 0: each latent fires on about half the inputs
    assert all(group["bias"] == 0 for group in first["groups"])
    assert first["l0"] == pytest.approx(128, rel=0.15) and first["matched"] == 0
    # the rule lowered every group's bias, and with it the L0
    assert all(group["bias"] < 0 for group in last["groups"]) and last["l0"] < first["l0"] / 10
    for line in lines:  # the three parts of the split add up to the L0
        parts = line["l0_matched_feature_present"] + line["l0_matched_feature_absent"] + line["l0_unmatched"]
        assert parts == pytest.approx(line["l0"], abs=1e-3)
        assert [group["target"] for group in line["groups"]][0] == pytest.approx(0.1)


def test_every_must_be_positive(script, capsys):
    with pytest.raises(SystemExit):
        script("l0_drift").main(["zipf", "--every", "0"])
    assert "--every must be >= 1" in capsys.readouterr().err
