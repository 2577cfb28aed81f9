"""scripts/small_latents.py: what the small model's L0 is made of (docs/experiments/prior_free.md)."""

import json

import pytest


def test_the_l0_splits_into_matched_duplicate_and_unmatched_latents(script, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    script("small_latents").main(["--samples", "25600", "--seeds", "0", "--trace", "--gba", "encoder_init=data"])
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["gba"] == {"encoder_init": "data"}
    parts = [line[k] for k in ("matched", "duplicates", "unmatched")]
    assert sum(p["latents"] for p in parts) == 128
    assert sum(p["l0"] for p in parts) == pytest.approx(line["l0"], abs=1e-3)
    assert line["matched"]["latents"] == line["features_matched"] <= 48
    assert line["l0"] > 0 and line["target_scale"] > 0
    assert len(line["ratios"]) == 100 // 10 - 1  # a check every 10 of the 100 steps, from step 10


def test_fewer_samples_than_a_batch_is_a_one_line_error(script, capsys):
    with pytest.raises(SystemExit):
        script("small_latents").main(["--samples", "100"])
    assert "--samples must be at least one batch (256), got 100" in capsys.readouterr().err
