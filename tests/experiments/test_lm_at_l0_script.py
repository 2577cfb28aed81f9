"""scripts/lm_at_l0.py: each GBA method's options (the runs themselves need the lm preset's cache)."""

import pytest


PAPER_TOLD = {"find_l0": False, "valley_thresholds": False, "encoder_init": "random", "firing_worth": 0.0,
              "idle_groups": False, "anneal_with_lr": False, "encoder_lr_scale": 1.0, "decoder_refit": False,
              "input_norm": "unit_mean", "activation_bias": False}
"""``target_l0`` as it trained before docs/experiments/prior_free.md's fifty-ninth step: the paper's options."""


@pytest.mark.parametrize("method, expected", [
    ("gba", {"target_l0": 4.0, **PAPER_TOLD}),
    ("gba-valley", {"target_l0": 4.0, **PAPER_TOLD, "valley_thresholds": True}),
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


def test_gba_told_is_the_defaults_told_an_l0_with_the_hook_s_options(script):
    """``gba-told``: ``target_l0`` (which turns ``find_l0`` off) with every option ``find_l0`` turns on but the
    valleys, and the residual-stream options only at a residual-stream hook; the SAE built from it trains with
    them, as one built with ``target_l0`` alone does."""
    from dataclasses import fields

    from gba_lens.experiments.compare import methods as M
    from gba_lens.saes.gba_options import GBAOptions
    from gba_lens.saes.hook_defaults import settle_hook_options

    variant = script("lm_at_l0").variant
    on = {"valley_thresholds": False, "encoder_init": "data", "firing_worth": 0.5, "idle_groups": True,
          "anneal_with_lr": True, "encoder_lr_scale": 2.0, "decoder_refit": True}
    assert dict(variant("gba-told", 16.0).params) == {"target_l0": 16.0, **on}
    assert dict(variant("gba-told", 16.0, hook="blocks.1.hook_mlp_out").params) == {"target_l0": 16.0, **on}
    resid = variant("gba-told", 16.0, (0.2, 1e-3), hook="blocks.1.hook_resid_pre")
    assert dict(resid.params) == {"target_l0": 16.0, **on, "input_norm": "per_token", "activation_bias": True,
                                  "highest_target": 0.2, "lowest_target": 1e-3}
    for told, hook, per_token in ((resid, "blocks.1.hook_resid_pre", True), (variant("gba-told", 16.0), None, False)):
        sae = M.build(told, 8, 64, "cpu")
        sae.cfg.metadata.hook_name = hook
        settle_hook_options(sae)
        assert not sae.cfg.find_l0 and sae.cfg.target_l0 == 16.0 and sae.cfg.decoder_refit and sae.cfg.idle_groups
        assert (sae.cfg.input_norm == "per_token") == per_token and bool(sae.cfg.activation_bias) == per_token
    for hook in ("blocks.1.hook_resid_pre", None):  # target_l0 alone resolves to the same options
        told, alone = (M.build(v, 8, 64, "cpu") for v in (variant("gba-told", 16.0, hook=hook),
                                                          M.Variant("gba", 1.0, (("target_l0", 16.0),))))
        for sae in (told, alone):
            sae.cfg.metadata.hook_name = hook
            settle_hook_options(sae)
        assert [getattr(told.cfg, f.name) for f in fields(GBAOptions)] == [getattr(alone.cfg, f.name)
                                                                         for f in fields(GBAOptions)]
