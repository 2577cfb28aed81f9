"""GBA's modes by name: the option sets (fields of :class:`~gba_lens.saes.gba_options.GBAOptions`)
that the study scripts under ``scripts/`` compare, written once so that a mode means the same
options in every table of docs/experiments/prior_free.md."""

from __future__ import annotations

from typing import Any

from gba_lens.saes.gba_options import GBAOptions

PAPER_RULE: dict[str, Any] = {"find_l0": False, "valley_thresholds": False}
"""The paper's rule: fixed geometric targets, thresholds at the biases (the options' default before
targets came from the data; every study of the range pins it)."""

UNIT_MEAN: dict[str, Any] = {"input_norm": "unit_mean", "activation_bias": False}
"""The inputs and outputs of every GBA run before the fifty-sixth step of docs/experiments/prior_free.md, pinned in
the modes that reproduce older defaults (at a residual-stream hook the defaults now divide each input by its norm
and learn each latent's output offset: :mod:`gba_lens.saes.hook_defaults`)."""

TOLD_AS_BEFORE: dict[str, Any] = {"find_l0": False, "valley_thresholds": False, "encoder_init": "random",
                                   "firing_worth": 0.0, "idle_groups": False, "anneal_with_lr": False,
                                   "encoder_lr_scale": 1.0, "decoder_refit": False, **UNIT_MEAN}
"""What ``target_l0`` trained with before the fifty-ninth step of docs/experiments/prior_free.md (the paper's options,
the level told); since then a run told its L0 trains with the defaults' options. Pinned by the studies that ask for
an L0 as they measured it (a study's own settings go on top)."""

FIND_L0_OPTIONS = ("valley_thresholds", "encoder_init", "firing_worth", "idle_groups", "anneal_with_lr",
                   "encoder_lr_scale", "decoder_refit")
"""The options ``find_l0`` turns on at any hook (at a residual-stream hook also ``input_norm`` and
``activation_bias``: :mod:`gba_lens.saes.hook_defaults`)."""


def _told_options() -> dict[str, Any]:
    """``FIND_L0_OPTIONS`` as a run told its L0 resolves them (:meth:`GBAOptions.trains_as_defaults`: the defaults'
    options, the valleys left to ``find_l0``)."""
    told = GBAOptions(target_l0=1.0)
    told.resolve_unset_options()
    return {name: getattr(told, name) for name in FIND_L0_OPTIONS}


GBA_MODES: dict[str, dict[str, Any]] = {
    "default": {},  # nothing set: valley thresholds and find_l0 (the L0 from the data), data starts, firing_worth,
    # idle_groups, anneal_with_lr, encoder_lr_scale, decoder_refit; at a residual-stream hook per_token, activation_bias
    "geometric": PAPER_RULE,  # the paper's rule: fixed geometric targets
    "told-l0": TOLD_AS_BEFORE,  # the scripts add target_l0: the paper's options with the level told
    "valley+told-l0": {**TOLD_AS_BEFORE, "valley_thresholds": True},
    "adaptive": {"targets": "adaptive"},  # group targets moved by the neurons
    "valley": {"valley_thresholds": True, "find_l0": False},  # thresholds at each neuron's valley, geometric targets
    "valley+adaptive": {"valley_thresholds": True, "targets": "adaptive"},
    "valley-targets": {"valley_thresholds": True, "targets": "valleys"},  # group targets from the valleys
    "search": {"target_search": True},  # target search on the geometric targets
    "valley-targets+search": {"valley_thresholds": True, "targets": "valleys", "target_search": True},
    # target scale from the co-activation balance, from random starts (as its tables were measured)
    "find-l0": {"find_l0": True, "valley_thresholds": False, "encoder_init": "random", "idle_groups": False,
                "anneal_with_lr": False, "encoder_lr_scale": 1.0, "decoder_refit": False, **UNIT_MEAN},
    # the default's level options (starts, idle_groups, anneal_with_lr, encoder_lr_scale and decoder_refit unset:
    # as the defaults)
    "valley+find-l0": {"valley_thresholds": True, "find_l0": True},
    # the defaults until the thirty-sixth step of docs/experiments/prior_free.md: without idle_groups
    "no-idle-groups": {"valley_thresholds": True, "find_l0": True, "idle_groups": False, "anneal_with_lr": False,
                       "encoder_lr_scale": 1.0, "decoder_refit": False, **UNIT_MEAN},
    # the defaults until the thirty-seventh step: the rule's steps at full size to the end
    "no-anneal": {"valley_thresholds": True, "find_l0": True, "anneal_with_lr": False, "encoder_lr_scale": 1.0,
                  "decoder_refit": False, **UNIT_MEAN},
    # the defaults until the thirty-eighth step: one learning rate for every weight
    "one-lr": {"valley_thresholds": True, "find_l0": True, "encoder_lr_scale": 1.0, "decoder_refit": False,
               **UNIT_MEAN},
    # the defaults with each latent's learned activation offset (opt-in; the thirty-ninth step)
    "activation-bias": {"valley_thresholds": True, "find_l0": True, "activation_bias": True, "input_norm": "unit_mean"},
    # the defaults with each input divided by its own norm (opt-in; the fortieth step), and with the offsets too
    "per-token": {"valley_thresholds": True, "find_l0": True, "input_norm": "per_token", "activation_bias": False},
    "per-token+activation-bias": {"valley_thresholds": True, "find_l0": True, "input_norm": "per_token",
                                  "activation_bias": True},
    # the defaults until the forty-second step: the trained decoder kept
    "no-refit": {"valley_thresholds": True, "find_l0": True, "decoder_refit": False, **UNIT_MEAN},
    # the defaults until the fifty-sixth step: unit-mean inputs and no output offsets at every hook
    "unit-mean": {"valley_thresholds": True, "find_l0": True, **UNIT_MEAN},
    # told an L0 (the scripts add target_l0) with every option find_l0 turns on at any hook but the valleys:
    # target_l0's own resolution since the fifty-ninth step, spelled out
    "defaults+told-l0": _told_options(),
}
"""Each mode's GBA options; a user's settings are added on top (never mutate these dicts)."""
