"""Idle groups (``idle_groups=True``, opt-in): the lowest groups' neurons join the groups above them when
their firings are worth nothing.

A neuron learns a feature that its group's target lets it resonate with. On data whose features
are all frequent (the paper's toy: every feature at about 0.09) the lowest targets resonate with
none, and the lowest groups' neurons spend the run firing on whatever crosses their thresholds:
firings that, on the whole, make the reconstruction worse. At GBA's defaults half of the toy's SAE
sits there (its five lowest groups, 512 of 1,024 neurons, end with 3 of its 128 features between
them), while the groups above find the features, and miss one or two on most seeds.

From ``START`` to ``AT`` of the run (0.2 to 0.3), every ``CHECK_EVERY`` steps, each group's firings are
valued as :mod:`gba_lens.saes.firing_worth` values them (how much the squared error would grow without
them, |z d|^2 + 2 z d . r) and summed per group. At ``AT``, once, per firing and against the average
firing's worth:

    idle block = the lowest groups, contiguous from the last one, worth at most SHARE (0.15) of it
                 (a group that did not fire in the window counts as worth nothing)
    if the average firing's worth is positive, the last group's firings are worth at most NOTHING
    (0.05) of it and the block holds b groups,
    0 < b < K: the neurons of its lowest ceil(b / 2) groups join the ceil(b / 2) groups right above
    the block, in turn, and take those groups' targets

The upper half of the block stays at the bottom of the range, nearest to the groups that work.
Measured on the toy (docs/experiments/prior_free.md, thirty-fifth step): moving the whole block into
the three groups above found every feature on three seeds of four at +24 ... +34% of the true L0, into
the one group above it found no more features; moving its lower half found all 128 on eight seeds of
eight at +16 ... +23% (the defaults without the rule: one to three features short on five seeds of six).
On the Zipfian models, the hierarchical one, the small model with more latents than features and the
stdlib LM the lowest group's firings are worth 0.17 of the average firing's or more: nothing moves.
It is opt-in because on the toy what it does depends on the run's length: at 0.3 of the preset budget
it costs features, at half of it the L0 ends about 45% over the truth, at twice it does not act.

Statistics: per-group sums (worth, firings), which data-parallel ranks all-reduce, so every rank
moves the same neurons.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import nn

from gba_lens.saes.firing_worth import worth_sums

START = 0.2
"""Share of the run's optimiser steps at which the measurement starts."""
AT = 0.3
"""Share of the run's optimiser steps at which the idle groups' neurons move (once)."""
CHECK_EVERY = 10
"""Optimiser steps between two measurements."""
SHARE = 0.15
"""A group is idle when its firings are worth at most this share of the average firing's (per firing)."""
NOTHING = 0.05
"""... and a block of idle groups moves only if its lowest group's firings are worth at most this share
of the average firing's: about nothing (the toy's: 0.004 or less; the other models' lowest groups: 0.17
or more, docs/experiments/prior_free.md, thirty-fifth step)."""


class IdleGroups(nn.Module):
    """The per-group worth of the firings between ``START`` and ``AT``, and the move at ``AT``.

    Buffers (saved with training checkpoints):
        sums   [2, K]  the summed worth and number of each group's firings so far (reduced across ranks)
        moved  [K]     1 for a group whose neurons joined the groups above it (all 0 until ``AT``)
        done   []      1 once the decision is taken (whether or not anything moved)
    """

    sums: torch.Tensor
    moved: torch.Tensor
    done: torch.Tensor

    def __init__(self, n_groups: int, device: str | torch.device = "cpu"):
        super().__init__()
        if n_groups < 2:
            raise ValueError(f"idle_groups moves neurons between groups: it needs n_groups >= 2, got {n_groups}")
        self.register_buffer("sums", torch.zeros(2, n_groups, device=device))
        self.register_buffer("moved", torch.zeros(n_groups, device=device))
        self.register_buffer("done", torch.zeros((), device=device))
        self._batch = torch.zeros_like(self.sums)  # the last measured batch's sums (before they are added)
        self._warned = False
        self._finished: bool | None = None  # ``done`` on the host, so that no step waits on the GPU

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._finished = None  # read again from the loaded buffer

    @property
    def finished(self) -> bool:
        """Whether the decision has been taken (read from the device once)."""
        if self._finished is None:
            self._finished = bool(self.done.item())
        return self._finished

    def due(self, step: int, horizon: int | None) -> bool:
        """Whether the step taken after ``step`` optimiser steps measures: every ``CHECK_EVERY``-th in
        [``START``, ``AT``) of the run (``horizon``: its length in optimiser steps, which gba_lens's
        trainers give the SAE). Without a horizon the rule cannot place itself in the run: it never
        acts, and says so once."""
        if horizon is None:
            if not self._warned:
                self._warned = True
                warnings.warn(f"idle_groups acts at {AT:g} of the run, whose length this trainer does not give: "
                              "it is off for this run (set sae.training_horizon to the run's optimiser steps)",
                              stacklevel=2)
            return False
        return not self.finished and step % CHECK_EVERY == 0 and START * horizon <= step < AT * horizon

    @torch.no_grad()
    def step(self, step: int, horizon: int | None, controller: Any, feature_acts: Float[torch.Tensor, "... d_sae"],
             decoder: Float[torch.Tensor, "d_sae d_in"], residual: Callable[[], Float[torch.Tensor, "... d_in"]],
             reduce: Callable[[nn.Module], None]) -> None:
        """One training step's part (after ``step`` optimiser steps): measure if due, and at ``AT`` move
        the idle groups' neurons with ``controller.move_neurons`` (a ``GroupBiasAdaptation``).
        ``residual``: the batch's reconstruction error in the units ``decoder`` reconstructs (computed
        only when measured); ``reduce``: combines a statistics module across data-parallel ranks."""
        if self.due(step, horizon):
            self.observe(feature_acts, decoder, residual(), controller.group)
            reduce(self)
            self.sums.add_(self._batch)
        elif horizon is not None and not self.finished and step >= AT * horizon:
            controller.move_neurons(*self.decide(controller.group))

    @torch.no_grad()
    def observe(
        self, feature_acts: Float[torch.Tensor, "... d_sae"], decoder: Float[torch.Tensor, "d_sae d_in"],
        residual: Float[torch.Tensor, "... d_in"], group: Int[torch.Tensor, " d_sae"],
    ) -> None:
        """This batch's summed worth and firings per group (this rank's rows; see :func:`worth_sums`)."""
        self._batch = torch.zeros_like(self.sums).index_add_(1, group, worth_sums(feature_acts, decoder, residual))

    def reduce_statistics(self, all_reduce: Callable[[torch.Tensor, str], None]) -> None:
        """Data-parallel training: the batch's sums over every rank's rows."""
        all_reduce(self._batch, "sum")

    @torch.no_grad()
    def decide(
        self, group: Int[torch.Tensor, " d_sae"]
    ) -> tuple[Int[torch.Tensor, " movers"], Int[torch.Tensor, " movers"]]:
        """Take the decision (once): the neurons that move (in index order) and the group each joins,
        the destination groups in turn; both empty when no group is idle or every group is."""
        self.done.fill_(1)
        self._finished = True
        worth, firings = self.sums
        average = worth.sum() / firings.sum().clamp(min=1)
        # per firing: worth / firings <= SHARE * average; the lowest group's must be worth about nothing.
        # While the average firing is worth nothing or less (a young SAE's firings overshoot) there is no
        # reference to read the groups against: nothing moves.
        idle = (worth <= SHARE * average * firings).tolist()
        n_groups = len(idle)
        block = 0
        if float(average) > 0 and float(worth[-1]) <= NOTHING * float(average * firings[-1]):
            while block < n_groups and idle[n_groups - 1 - block]:
                block += 1
        if block in (0, n_groups):
            return group[:0], group[:0]
        half = -(-block // 2)
        sources = torch.arange(n_groups - half, n_groups, device=group.device)
        destinations = torch.arange(max(0, n_groups - block - half), n_groups - block, device=group.device)
        self.moved[sources] = 1
        neurons = torch.isin(group, sources).nonzero().squeeze(1)
        return neurons, destinations[torch.arange(neurons.numel(), device=group.device) % destinations.numel()]
