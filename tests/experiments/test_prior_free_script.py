"""scripts/prior_free.py: each mode's GBA options (the runs themselves are the page's figures)."""

import pytest


@pytest.mark.parametrize("mode, expected", [
    ("geometric", {}),
    ("valley-targets", {"valley_thresholds": True, "targets": "valleys"}),
    ("search", {"target_search": True}),
    ("valley-targets+search", {"valley_thresholds": True, "targets": "valleys", "target_search": True}),
    ("told-l0", {"target_l0": 2.5}),
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
