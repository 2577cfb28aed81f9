"""scripts/l0_drift.py: the per-group L0 probe along training (docs/experiments/prior_free.md)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "l0_drift.py"


def _script():
    spec = importlib.util.spec_from_file_location("l0_drift", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probes_split_the_l0_by_ground_truth_and_follow_the_rule(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    _script().main(["zipf", "--samples", "61440", "--every", "20", "--probe", "2000"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["step"] for line in lines] == [0, 20, 40, 60]  # every 20 steps, and after the last
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


def test_every_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        _script().main(["zipf", "--every", "0"])
    assert "--every must be >= 1" in capsys.readouterr().err
