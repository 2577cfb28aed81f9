"""GBA's opt-in modes by name: the option sets (fields of :class:`~gba_lens.saes.gba_options.GBAOptions`)
that the study scripts under ``scripts/`` compare, written once so that a mode means the same
options in every table of docs/experiments/prior_free.md."""

from __future__ import annotations

from typing import Any

GBA_MODES: dict[str, dict[str, Any]] = {
    "geometric": {},  # the paper's rule: fixed geometric targets (the default)
    "adaptive": {"targets": "adaptive"},  # group targets moved by the neurons
    "valley": {"valley_thresholds": True},  # thresholds at each neuron's valley, geometric targets
    "valley+adaptive": {"valley_thresholds": True, "targets": "adaptive"},
    "valley-targets": {"valley_thresholds": True, "targets": "valleys"},  # group targets from the valleys
    "search": {"target_search": True},  # target search on the geometric targets
    "valley-targets+search": {"valley_thresholds": True, "targets": "valleys", "target_search": True},
    "find-l0": {"find_l0": True},  # target scale from the co-activation balance
    "valley+find-l0": {"valley_thresholds": True, "find_l0": True},
}
"""Each mode's GBA options; a user's settings are added on top (never mutate these dicts)."""
