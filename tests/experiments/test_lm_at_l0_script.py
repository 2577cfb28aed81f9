"""scripts/lm_at_l0.py: each GBA method's options (the runs themselves need the lm preset's cache)."""

import pytest


@pytest.mark.parametrize("method, expected", [
    ("gba", {"target_l0": 4.0}),
    ("gba-valley", {"target_l0": 4.0, "valley_thresholds": True}),
    ("gba-geometric", {"find_l0": False, "valley_thresholds": False}),  # the paper's rule, pinned
    ("gba-valley-thresholds", {"valley_thresholds": True, "find_l0": False}),
    ("gba-valley-targets", {"valley_thresholds": True, "targets": "valleys"}),
    ("gba-search", {"target_search": True}),
    ("gba-valley-targets-search", {"valley_thresholds": True, "targets": "valleys", "target_search": True}),
])
def test_gba_methods_set_their_options_and_keep_the_range(script, method, expected):
    variant = script("lm_at_l0").variant
    assert variant(method, 4.0).method == "gba"
    assert dict(variant(method, 4.0).params) == expected
    ranged = dict(variant(method, 4.0, (0.1, 1e-4), (("gamma_minus", 0.1),)).params)
    assert ranged == {**expected, "highest_target": 0.1, "lowest_target": 1e-4, "gamma_minus": 0.1}


def test_a_k_method_is_one_point_of_its_sweep_at_the_l0(script):
    topk = script("lm_at_l0").variant("topk", 6.0)
    assert topk.method == "topk" and topk.knob == 6.0
