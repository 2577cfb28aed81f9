"""`gba-lens compare --quick`, both presets, end to end through the command line (what CI runs)."""

import json
import math

import pytest

from gba_lens import cli


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_quick_synthbench_scores_every_method_against_the_true_features(tmp_path):
    assert cli.main(["compare", "--preset", "synthbench", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compare_synthbench.json").read_text())
    assert (tmp_path / "compare_synthbench.md").is_file() and (tmp_path / "compare_synthbench.png").is_file()
    rows = result["at_true_l0"]
    assert {r["method"] for r in rows} >= {"gba", "batchtopk", "l1"}
    for row in rows:
        assert 0.0 <= row["mcc"] <= 1.0 and math.isfinite(row["explained_variance"]) and row["l0"] > 0, row
    assert result["true_l0"] > 0


def test_quick_lm_frontier_has_a_curve_per_hook_and_method(tmp_path):
    assert cli.main(["compare", "--preset", "lm", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compare_lm.json").read_text())
    assert (tmp_path / "compare_lm.png").is_file()
    hooks = {r["hook"] for r in result["runs"]}
    assert len(hooks) == 2 and any("mlp_out" in h for h in hooks)
    for run in result["runs"]:
        assert math.isfinite(run["ce_loss_score"]) and math.isfinite(run["explained_variance"]) and run["l0"] > 0, run
    assert {(r["hook"], r["method"]) for r in result["frontier_at"]} >= {(h, "gba") for h in hooks}
