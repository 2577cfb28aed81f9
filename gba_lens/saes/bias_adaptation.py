"""Group Bias Adaptation: the paper's bias rule, in one place.

Chen et al., "Taming Polysemanticity in LLMs" (arXiv:2506.14002). The neurons of the SAE are
split into K groups; group k has a target activation frequency p_k, geometric from HTF down to
LTF. Biases get no gradient. Between two updates only running statistics are kept per neuron:

    p_m = fraction of samples with y_m > 0            (firing frequency)
    r_m = max(0, max over samples of y_m)             (peak pre-activation)

and every T optimiser steps, for each neuron m of group k:

    if   p_m > p_k:  b_m <- max(b_m - gamma_minus * r_m,      -1)   # over-active: more selective
    elif p_m < eps:  b_m <- min(b_m + gamma_plus  * rbar_k,     0)   # dead: more sensitive
    else:            b_m unchanged

with rbar_k the mean of the positive r_m over group k. Then the statistics are reset.
Single-group BA (the analysed algorithm) is K = 1. With ``anneal_with_lr`` both steps are scaled by
the learning rate over its peak (:attr:`GroupBiasAdaptation.rate`), so that the biases settle as the
weights do (with a requested L0, not the lowering step of a neuron far over its target: see l0_control).

With ``targets="adaptive"`` the group targets start on the geometric range and then move after
every update by the rule of :mod:`gba_lens.saes.target_adaptation`; the default ``"geometric"``
keeps them fixed. With ``targets="valleys"`` each group's target becomes the median frequency of
the features its neurons found (their valleys, see ``follow_valleys``). With a requested L0
(``target_l0``) the targets are the geometric ones times a common scale that
:mod:`gba_lens.saes.l0_control` moves, and a third branch raises live neurons under their target
(by the dead branch's step), so that the L0 meets the request; with ``find_l0`` the same scale
follows the co-activation balance of :mod:`gba_lens.saes.coactivation`. With ``target_search``
(:mod:`gba_lens.saes.target_search`) neuron m's target is p_k times its own scale, raised while its
decoder direction keeps turning. With ``firing_worth`` (:mod:`gba_lens.saes.firing_worth`) each
neuron's target is also scaled down where its firings reconstruct little. With ``idle_groups``
(:mod:`gba_lens.saes.idle_groups`) the lowest groups' neurons join the groups above them, once, when
those groups' firings, after doing harm, are worth nothing (``move_neurons``).

The statistics are sums and maxima (``fire_count``, ``n_samples``, ``peak``) so that data-parallel
training can all-reduce them (SUM, SUM, MAX) before ``update`` - see ``reduce_statistics``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import nn

from gba_lens.saes import target_adaptation
from gba_lens.saes.coactivation import CoactivationBalance
from gba_lens.saes.firing_worth import FiringWorth
from gba_lens.saes.idle_groups import IdleGroups
from gba_lens.saes.l0_control import L0Control
from gba_lens.saes.target_adaptation import adapt_group_targets, targets_from_valleys
from gba_lens.saes.target_search import TargetSearch

TARGET_MODES = ("geometric", "adaptive", "valleys")


def group_targets(n_groups: int, highest: float, lowest: float) -> torch.Tensor:
    """Target frequencies p_k = HTF * (LTF / HTF)^((k-1)/(K-1)), k = 1..K (K = 1: [HTF])."""
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    if not 0.0 < lowest <= highest <= 1.0:
        raise ValueError(f"need 0 < LTF <= HTF <= 1, got LTF={lowest}, HTF={highest}")
    if n_groups == 1:
        return torch.tensor([highest], dtype=torch.float64)
    k = torch.arange(n_groups, dtype=torch.float64)
    return highest * (lowest / highest) ** (k / (n_groups - 1))


def group_index(d_sae: int, n_groups: int) -> torch.Tensor:
    """Neuron m belongs to group floor(m * K / M): K contiguous, (nearly) equal groups."""
    if n_groups > d_sae:
        raise ValueError(f"n_groups ({n_groups}) cannot exceed the number of neurons ({d_sae})")
    return torch.arange(d_sae) * n_groups // d_sae


class GroupBiasAdaptation(nn.Module):
    """Per-neuron firing statistics and the GBA bias update.

    Buffers (saved with training checkpoints, so a resumed run continues exactly):
        fire_count  [d_sae]   samples with y_m > 0 since the last update (sum)
        peak        [d_sae]   max(0, max y_m) since the last update (max)
        n_samples   []        samples seen since the last update (sum)
        target      [d_sae]   each neuron's group target p_k
        group       [d_sae]   each neuron's group index k
        average     [d_sae]   (``targets="adaptive"`` only) slow average of the window frequencies
        l0_control.*          (``target_l0`` or ``find_l0`` only) the target scale, see :class:`L0Control`
        target_search.*       (``target_search`` only) the per-neuron target scales, see :class:`TargetSearch`
        firing_worth.*        (``firing_worth`` only) the per-neuron target multipliers, see :class:`FiringWorth`
        idle_groups.*         (``idle_groups`` only) the groups' firings' worth and the move, see :class:`IdleGroups`
    """

    fire_count: torch.Tensor
    peak: torch.Tensor
    n_samples: torch.Tensor
    target: torch.Tensor
    group: torch.Tensor

    def __init__(
        self,
        d_sae: int,
        n_groups: int = 10,
        highest_target: float = 0.1,
        lowest_target: float = 1e-3,
        gamma_minus: float = 0.01,
        gamma_plus: float = 0.01,
        dead_eps: float = 1e-6,
        bias_min: float = -1.0,
        bias_max: float = 0.0,
        targets: str = "geometric",
        target_l0: float | None = None,
        find_l0: bool = False,
        target_search: TargetSearch | None = None,
        firing_worth: FiringWorth | None = None,
        idle_groups: IdleGroups | None = None,
        anneal_with_lr: bool = False,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        if targets not in TARGET_MODES:
            raise ValueError(f"targets must be one of {TARGET_MODES}, got {targets!r}")
        self.targets = targets
        self.n_groups = n_groups
        self.gamma_minus = gamma_minus
        self.gamma_plus = gamma_plus
        self.dead_eps = dead_eps
        self.bias_min = bias_min
        self.bias_max = bias_max
        if not 0 <= dead_eps < lowest_target:
            raise ValueError(f"dead_eps ({dead_eps}) must be in [0, LTF={lowest_target})")
        group = group_index(d_sae, n_groups).to(device)
        targets = group_targets(n_groups, highest_target, lowest_target).float().to(device)
        self.register_buffer("group", group)
        self.register_buffer("target", targets[group])
        self.register_buffer("fire_count", torch.zeros(d_sae, device=device))
        self.register_buffer("peak", torch.zeros(d_sae, device=device))
        self.register_buffer("n_samples", torch.zeros((), device=device))
        if self.targets != "geometric" and (target_l0 is not None or find_l0):
            raise ValueError(f"{'find_l0' if find_l0 else 'target_l0'} and targets={self.targets!r} both move the "
                             "targets; set one of them")
        if find_l0 and target_l0 is not None:
            raise ValueError("find_l0 finds the L0 that target_l0 asks for; set one of them")
        if self.targets == "adaptive":
            self.register_buffer("average", target_adaptation.INITIAL_AVERAGE * self.target.clone())
        self.l0_control = L0Control(target_l0, self.target) if target_l0 is not None or find_l0 else None
        self.coactivation = CoactivationBalance(device) if find_l0 else None
        if self.l0_control is not None:
            self.target.copy_(self.l0_control.scaled_targets())
        self.target_search = target_search
        self.firing_worth = firing_worth
        if idle_groups is not None and (self.targets != "geometric" or target_search is not None):
            raise ValueError("idle_groups moves neurons between the geometric groups: not with other targets or "
                             "target_search")
        self.idle_groups = idle_groups
        self.anneal_with_lr = anneal_with_lr
        self.lr_share: float | None = None  # the learning rate over its peak: gba_lens's trainers set it each step
        self._warned = False

    @property
    def rate(self) -> float:
        """The share of their full size the rule's steps (and the valley step) take: with ``anneal_with_lr``
        the learning rate over its peak (``lr_share``), else 1. A trainer that does not set ``lr_share``
        (SAELens's own) leaves the full steps, and the first step says so."""
        if not self.anneal_with_lr:
            return 1.0
        if self.lr_share is None:
            if not self._warned:
                self._warned = True
                warnings.warn("anneal_with_lr scales the bias rule's steps by the learning rate, which this trainer "
                              "does not give the SAE (gba_lens's trainers do): the rule keeps its full steps",
                              stacklevel=2)
            return 1.0
        return self.lr_share

    @property
    def searched_targets(self) -> torch.Tensor:
        """[d_sae] each neuron's group target times its search scale (before its firings' worth)."""
        return self.target if self.target_search is None else self.target_search.targets(self.target)

    @property
    def neuron_targets(self) -> torch.Tensor:
        """[d_sae] the target each neuron is held to: its group's, times its search scale and its
        firings' worth multiplier."""
        return self._times_worth(self.searched_targets)

    def _times_worth(self, searched: Float[torch.Tensor, " d_sae"]) -> torch.Tensor:
        """``searched`` (:attr:`searched_targets`) times each neuron's firings' worth multiplier."""
        return searched if self.firing_worth is None else searched * self.firing_worth.multiplier

    @property
    def group_targets(self) -> torch.Tensor:
        """[K] target frequency of each group (before any search scale)."""
        return self.per_group(self.target)

    def per_group(self, values: Float[torch.Tensor, " d_sae"]) -> Float[torch.Tensor, " n_groups"]:
        """[K] the value of a per-neuron vector that every neuron of a group shares (0 for an empty group)."""
        return torch.zeros(self.n_groups, dtype=values.dtype, device=values.device).scatter_(0, self.group, values)

    @torch.no_grad()
    def observe(
        self,
        pre_acts: Float[torch.Tensor, "... d_sae"],
        fired: Float[torch.Tensor, "... d_sae"] | None = None,
    ) -> None:
        """Accumulate statistics of y = u + b (the gated pre-activations) for a batch.

        ``fired`` may pass the float mask 1[y > 0] the forward pass already computed.
        """
        y = pre_acts.detach().reshape(-1, pre_acts.shape[-1])
        fired = (y > 0).to(y.dtype) if fired is None else fired.reshape(y.shape)
        self.accumulate(fired.sum(0, dtype=torch.float32), y.amax(0).float(), y.shape[0])

    @torch.no_grad()
    def accumulate(
        self, fire_count: Float[torch.Tensor, " d_sae"], peak: Float[torch.Tensor, " d_sae"], n_samples: int
    ) -> None:
        """Add one batch's per-neuron firing count and max pre-activation (computed by the caller)."""
        self.fire_count += fire_count.to(self.fire_count.dtype)
        self.peak.copy_(torch.maximum(self.peak, peak.clamp(min=0).to(self.peak.dtype)))
        self.n_samples += n_samples

    def reduce_statistics(self, all_reduce: Callable[[torch.Tensor, str], None]) -> None:
        """Combine statistics across data-parallel ranks before ``update``.

        ``all_reduce(tensor, op)`` must reduce in place with ``op`` in {"sum", "max"}, e.g.
        ``lambda t, op: dist.all_reduce(t, dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)``.
        """
        all_reduce(self.fire_count, "sum")
        all_reduce(self.n_samples, "sum")
        all_reduce(self.peak, "max")

    @property
    def frequency(self) -> torch.Tensor:
        """[d_sae] firing frequency p_m over the current window (0 before any sample)."""
        return self.fire_count / self.n_samples.clamp(min=1)

    @torch.no_grad()
    def update(self, bias: Float[torch.Tensor, " d_sae"], with_stats: bool = True) -> dict[str, torch.Tensor]:
        """Apply the two-branch rule to ``bias`` in place, then reset the statistics.

        Returns the fractions of over-active and dead neurons in the window (0-dim tensors, so
        that nothing synchronises with the GPU unless they are logged; empty if not ``with_stats``).
        """
        stats = self.apply_rule(bias, self.fire_count, self.peak, self.n_samples.clamp(min=1), with_stats)
        self.reset()
        return stats

    @torch.no_grad()
    def apply_rule(
        self,
        bias: Float[torch.Tensor, " d_sae"],
        fire_count: Float[torch.Tensor, " d_sae"],
        peak: Float[torch.Tensor, " d_sae"],
        n_samples: int | torch.Tensor,
        with_stats: bool = True,
    ) -> dict[str, torch.Tensor]:
        """The rule on one window's statistics (``update`` passes the accumulated ones; with T = 1
        the SAE passes the batch's own, skipping the buffers), its steps times :attr:`rate`."""
        p = fire_count / n_samples                      # p_m (n_samples >= 1 by construction)
        r = peak.clamp(min=0)                           # r_m
        if self.l0_control is not None:
            self.l0_control.step(self.target, p)
        # rbar_k: mean of the positive peaks of group k (0 if none is positive); r is >= 0, so
        # summing r over the group sums exactly its positive peaks.
        sums = torch.zeros(2, self.n_groups, device=r.device, dtype=r.dtype).index_add_(
            1, self.group, torch.stack((r, (r > 0).to(r.dtype))))
        rbar = (sums[0] / sums[1].clamp(min=1))[self.group]

        searched = self.searched_targets  # computed once: the held targets and a told level's lowering read it
        target = self._times_worth(searched)
        over_active = p > target
        dead = p < self.dead_eps  # never fired; disjoint from over_active as every target > eps
        rate = self.rate
        # how far over its target a neuron fires, for a told level, reads the target before its firings' worth:
        # firing_worth lowers targets late in the run, at the rule's own pace (see L0Control.lowering_rate)
        lower_rate = rate if self.l0_control is None else self.l0_control.lowering_rate(rate, searched, p)
        lowered = (bias - self.gamma_minus * lower_rate * r).clamp_(min=self.bias_min)
        raised = (bias + self.gamma_plus * rate * rbar).clamp_(max=self.bias_max)
        # A requested L0 also raises live neurons under target (see l0_control); else only the dead.
        under = dead if self.l0_control is None else ~over_active & (p < target)
        bias.copy_(torch.where(over_active, lowered, torch.where(under, raised, bias)))
        if self.targets == "adaptive":
            adapt_group_targets(self.target, self.group, self.average, p, self.n_groups)
        if not with_stats:
            return {}
        return {"over_active_fraction": over_active.float().mean(), "dead_fraction": dead.float().mean()}

    @torch.no_grad()
    def follow_valleys(self, has_valley: torch.Tensor, frequency: Float[torch.Tensor, " d_sae"]) -> None:
        """``targets="valleys"``: after a valley window, the group targets from the features found
        (:func:`~gba_lens.saes.target_adaptation.targets_from_valleys`); other modes: nothing."""
        if self.targets == "valleys":
            targets_from_valleys(self.target, self.group, self.n_groups, has_valley, frequency)

    @torch.no_grad()
    def move_neurons(self, neurons: Int[torch.Tensor, " movers"], groups: Int[torch.Tensor, " movers"]) -> None:
        """Put ``neurons`` into ``groups`` (one each), with those groups' targets (``idle_groups``)."""
        if self.l0_control is not None:
            self.l0_control.base_target[neurons] = self.per_group(self.l0_control.base_target)[groups]
        self.target[neurons] = self.group_targets[groups]
        self.group[neurons] = groups

    @torch.no_grad()
    def reset(self) -> None:
        self.fire_count.zero_()
        self.peak.zero_()
        self.n_samples.zero_()

    @torch.no_grad()
    def group_means(
        self, values: Float[torch.Tensor, " n"], neurons: Int[torch.Tensor, " n"] | None = None
    ) -> torch.Tensor:
        """[K] mean over each group's neurons of a per-neuron vector (e.g. the biases); with
        ``neurons``, ``values`` holds only those neurons' values (a group with none of them: 0)."""
        group = self.group if neurons is None else self.group[neurons]
        total = torch.zeros(self.n_groups, device=values.device).index_add_(0, group, values.float())
        return total / torch.bincount(group, minlength=self.n_groups).clamp(min=1).float()

    def group_frequencies(self, fired: Float[torch.Tensor, " d_sae"]) -> torch.Tensor:
        """[K] mean over each group's neurons of a per-neuron frequency vector."""
        return self.group_means(fired)
