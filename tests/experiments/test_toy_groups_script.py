"""scripts/toy_groups.py: which GBA groups learn the paper toy's features (docs/experiments/prior_free.md)."""

import json

import pytest


def test_groups_account_for_every_neuron_and_every_missed_feature(script, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    script("toy_groups").main(["--samples", "153600", "--seeds", "0", "--range", "0.1", "0.03"])
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    groups = line["groups"]
    assert [g["target"] for g in groups][0] == pytest.approx(0.1) and groups[-1]["target"] == pytest.approx(0.03)
    assert sum(g["neurons"] for g in groups) == 1024
    assert all(g["features"] <= g["matched"] <= g["neurons"] for g in groups)
    assert all(0 < g["frequency"] < 1 for g in groups)
    # every feature is either recovered at 0.9 or listed as missed, with its best neuron's group
    assert len(line["missed"]) == round((1 - line["frr_09"]) * 128)
    assert all(m["cosine"] < 0.9 and 0 <= m["group"] < 10 for m in line["missed"])
    assert 0 < len(line["missed"]) < 128  # 300 steps: some features found, not all
    assert sum(g["matched"] for g in groups) > 0
    # decoder stability: a cosine per group for its matched and its unmatched neurons (None: none)
    for g in groups:
        for name, count in (("stability_matched", g["matched"]), ("stability_unmatched", g["neurons"] - g["matched"])):
            assert (g[name] is None) == (count == 0)
            assert g[name] is None or -1 <= g[name] <= 1
    assert any(g["stability_unmatched"] < 0.99 for g in groups)  # the decoder moved after the snapshot


def test_a_zipf_model_on_its_own_width_and_features(script, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    script("toy_groups").main(["--zipf", "A", "--samples", "51200", "--seeds", "1", "--stability-from", "0.5"])
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["model"] == "zipf A" and line["seed"] == 1
    assert sum(g["neurons"] for g in line["groups"]) == 256  # model A: 256 features, width 256
    assert len(line["missed"]) == round((1 - line["frr_09"]) * 256)


def test_fewer_samples_than_a_batch_is_a_one_line_error(script, capsys):
    with pytest.raises(SystemExit):
        script("toy_groups").main(["--samples", "10"])
    assert "--samples must be at least one batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script("toy_groups").main(["--stability-from", "1"])
    assert "--stability-from must be in [0, 1), got 1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script("toy_groups").main(["--no-idle-groups"])  # it takes from the defaults, not from the paper's rule
    assert "--no-idle-groups takes idle_groups from GBA's defaults: use it with --defaults" in capsys.readouterr().err


def test_the_defaults_without_idle_groups_are_recorded_and_the_groups_add_up(script, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    script("toy_groups").main(["--samples", "51200", "--seeds", "0", "--defaults", "--no-idle-groups"])
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["gba"] == {"idle_groups": False}
    assert sum(g["neurons"] for g in line["groups"]) == 1024  # moved or not, every latent is in one group


def test_the_defaults_and_what_the_missed_features_leave_in_the_error(script, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    script("toy_groups").main(["--samples", "102400", "--seeds", "0", "--defaults"])
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["gba"] == {}  # nothing pinned: GBA's defaults (the paper's rule pins find_l0 and valleys off)
    assert 0 < line["residual_median"]
    assert 0 < len(line["missed"]) < 128  # 200 steps: some features found (13 on this machine), not all
    for missed in line["missed"]:
        assert 0 <= missed["residual_rank"] < 128 and missed["residual"] > 0
        assert 0 <= missed["neuron_frequency"] <= 1
    for a in line["missed"]:  # a larger residual ranks first (the residuals are rounded: ties say nothing)
        for b in line["missed"]:
            assert a["residual"] <= b["residual"] or a["residual_rank"] < b["residual_rank"]


def test_residual_along_features_reads_each_feature_where_it_is_active(script):
    import torch

    residual_along_features = script("toy_groups").residual_along_features
    features = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    inputs = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    reconstructions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # errors (2, 0), (0, 0), (0, 2)
    feature_acts = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    energy = residual_along_features(inputs, reconstructions, features, feature_acts)
    # feature 0 (unit (1, 0)) is active on rows 0 and 1: errors along it 2 and 0 -> (4 + 0) / 2;
    # feature 1 (unit (0, 1)) on rows 1 and 2: 0 and 2 -> 2; feature 2 never active -> 0
    assert energy.tolist() == [2.0, 2.0, 0.0]
