"""scripts/sample_efficiency.py: where a curve reaches a level, and GBA's rows (the runs themselves
are the page's figures)."""

import math

import pytest


def test_reach_interpolates_on_the_log_budget_and_counts_the_sweep(script):
    reach = script("sample_efficiency")._reach
    curve = {1_000: 0.2, 4_000: 0.6, 16_000: 0.8}
    assert reach(curve, 0.1, 1) == 1_000                      # reached at the first budget
    assert reach(curve, 0.4, 1) == pytest.approx(2_000)       # halfway between 1k and 4k in log
    assert reach(curve, 0.7, 3) == pytest.approx(3 * math.sqrt(4_000 * 16_000))
    assert reach(curve, 0.9, 1) is None                       # never reached


def test_every_gba_row_builds_a_valid_gba_config(script):
    from gba_lens.saes.gba import GBATrainingSAEConfig

    modes = script("sample_efficiency").GBA_MODES
    assert modes["GBA"] == {"find_l0": False, "valley_thresholds": False}  # the paper's rule, pinned
    for name, options in modes.items():
        cfg = GBATrainingSAEConfig(d_in=8, d_sae=32, **options)
        assert cfg.target_search == name.endswith("search")
        assert cfg.valley_thresholds == ("valley" in name)
        assert cfg.find_l0 == ("find_l0" in name)
        assert cfg.idle_groups == (cfg.find_l0 and not name.endswith("no idle_groups"))  # on with find_l0


def test_an_unknown_gba_row_is_refused_by_the_parser(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script("sample_efficiency").main(["--gba-rows", "GBA searching"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'GBA searching'" in capsys.readouterr().err
