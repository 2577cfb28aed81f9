"""Firing targets from the data: GBA's group targets moved by what the neurons find.

Two rules: ``targets="adaptive"`` (below) and ``targets="valleys"`` (:func:`targets_from_valleys`).

The geometric range (HTF ... LTF) is a prior on the feature-frequency spectrum. In adaptive mode
the groups start on that range and each group's target then follows its own neurons, read from a
slow per-neuron average f_m of the window frequencies p_m (f_m <- f_m + beta (p_m - f_m)):

    saturated_m = f_m >= SATURATED * p_k     the neuron is held down by its target: there is more
                                             of its feature(s) than the target lets it claim
    slack_m     = LIVE * p_k <= f_m < SLACK * p_k
                                             alive but well under target: no feature at the
                                             target's frequency is left for it to claim

and after every bias update, for each group k with n_k neurons:

    log p_k <- log p_k + eta * (#saturated_k - #slack_k) / n_k,   p_k clamped to [p_min, p_max]

an integral controller whose rest point is a target that as many of the group's live neurons
sit under as are held at. Neurons under LIVE * p_k (dead or nearly so) do not vote: the bias rule
is still reviving them. The only statistics it needs are the bias rule's own window frequencies
(sums), so data-parallel training reduces nothing more; f_m and the targets are updated
identically on every rank.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

SATURATED = 0.8
"""f_m >= 0.8 p_k: held at target (the bias rule keeps a saturated neuron just under p_k)."""
SLACK = 0.7
"""f_m < 0.7 p_k: under target."""
LIVE = 0.02
"""f_m < 0.02 p_k: dead or being revived; no vote."""
INITIAL_AVERAGE = 0.75
"""f_m starts at 0.75 p_k, between SLACK and SATURATED, so that no neuron votes before it has data."""


@torch.no_grad()
def adapt_group_targets(
    target: Float[torch.Tensor, " d_sae"],
    group: Int[torch.Tensor, " d_sae"],
    average: Float[torch.Tensor, " d_sae"],
    frequency: Float[torch.Tensor, " d_sae"],
    n_groups: int,
    beta: float = 0.01,
    eta: float = 0.003,
    bounds: tuple[float, float] = (1e-4, 0.5),
) -> Float[torch.Tensor, " n_groups"]:
    """One step of the rule above, in place on ``average`` (f_m) and ``target`` (p_k per neuron).

    ``frequency``: this window's p_m. Returns the group drive (#saturated - #slack) / n_k.
    """
    average.add_(frequency - average, alpha=beta)
    saturated = average >= SATURATED * target
    slack = (average < SLACK * target) & (average >= LIVE * target)
    votes = saturated.to(target.dtype) - slack.to(target.dtype)
    drive = torch.zeros(n_groups, device=target.device, dtype=target.dtype).index_add_(0, group, votes)
    drive /= torch.bincount(group, minlength=n_groups).clamp(min=1).to(target.dtype)
    target.mul_(torch.exp(eta * drive)[group]).clamp_(*bounds)
    return drive


MIN_VALLEY_FRACTION = 0.1
"""``targets="valleys"``: a group's target follows its valleys once this fraction of its neurons has one."""
MIN_VALLEY_NEURONS = 1
"""... and at least this many of them (1: the fraction alone decides). docs/experiments/prior_free.md
measures 3 with a fraction of 0.05: it fixes Zipf C and lowers the language model's L0 under every
baseline's frontier, so the defaults stay."""


@torch.no_grad()
def targets_from_valleys(
    target: Float[torch.Tensor, " d_sae"],
    group: Int[torch.Tensor, " d_sae"],
    n_groups: int,
    has_valley: torch.Tensor,
    frequency: Float[torch.Tensor, " d_sae"],
    min_fraction: float | None = None,
    bounds: tuple[float, float] = (1e-4, 0.5),
) -> None:
    """``targets="valleys"``, in place on ``target`` (p_k per neuron), after a valley window.

    A neuron with a valley (:mod:`gba_lens.saes.valley_thresholds`) has found a feature, and the
    mass of its histogram above the valley is that feature's frequency. Where at least
    ``min_fraction`` (default ``MIN_VALLEY_FRACTION``) of a group's neurons, and at least
    ``MIN_VALLEY_NEURONS`` of them, have one, the group's target becomes the median of their
    frequencies: the neurons of the group still searching look for features as frequent as the
    ones their group found, not for the geometric prior's. Other groups keep their target.
    """
    min_fraction = MIN_VALLEY_FRACTION if min_fraction is None else min_fraction
    values = torch.where(has_valley, frequency, torch.full_like(frequency, float("nan")))
    for k in range(n_groups):
        members = group == k
        found = (has_valley & members).sum()
        median = torch.where(members, values, torch.nan).nanmedian().clamp(*bounds)  # no mask indexing: no sync
        enough = (found >= max(1, MIN_VALLEY_NEURONS)) & (found >= min_fraction * members.sum())
        target.copy_(torch.where(members & enough, median, target))
