"""Idle groups (``idle_groups``): the lowest groups' neurons join the groups above them once their
firings, after doing harm, are worth nothing.

A neuron learns a feature that its group's target lets it resonate with. On data whose features
are all frequent (the paper's toy: every feature at about 0.09) the lowest targets resonate with
none, and the lowest groups' neurons spend the run firing on whatever crosses their thresholds.
At first those firings make the reconstruction worse; the bias rule lowers the neurons until their
firings are worth about nothing, and there they stay. Without the rule half of the toy's SAE sits
there (its five lowest groups, 512 of 1,024 neurons, end with 3 of its 128 features between them),
while the groups above find the features, and miss one or two on most seeds.

Every ``CHECK_EVERY`` steps each group's firings are valued as :mod:`gba_lens.saes.firing_worth` values
them (how much the squared error would grow without them, |z d|^2 + 2 z d . r) and summed per group.
A reading is the sum of the last ``WINDOW`` measurements, per firing and against the average firing's
worth. The rule waits for three things, in order:

    1. readings with a positive average (a young SAE's firings overshoot: no reference before),
    2. a reading, of measurements all taken after the first of those, in which the lowest group's
       firings do harm: worth at most -HARM (-0.15) of the average firing's,
    3. the first reading after it in which they no longer do: worth more than nothing (over 0).

On that reading it decides, once:

    idle block = the lowest groups, contiguous from the last one, worth at most SHARE (0.15) of it
                 (a group that did not fire in the window counts as worth nothing)
    if the last group's firings are worth at most NOTHING (0.05) of it and the block holds b groups,
    0 < b < K: the neurons of its lowest ceil(b / 2) groups join the ceil(b / 2) groups right above
    the block, in turn, and take those groups' targets

The upper half of the block stays at the bottom of the range, nearest to the groups that work. If
the decision has not come by ``LATEST`` (0.4) of the run nothing moves: the movers need the rest of it.
The readings follow the optimiser's steps, not the share of the run, so a run of any length decides
at the same step if it decides (on the toy, steps 540-620 of batches of 512). Measured
(docs/experiments/prior_free.md, thirty-fifth and thirty-sixth steps): on the toy moving the lower half
of the block finds all 128 features at the preset budget on eight seeds of eight, and at twice it (there
at +31 to +34 percent of the true L0); runs of 0.6x the budget or less end as without the rule. Moving the
whole block, or into the one group above it, did worse. On the Zipfian models, the hierarchical one,
the small model with more latents than features, the counter-example and the stdlib LM the lowest
group's firings never do harm once the average firing is worth something: nothing moves.

Statistics: per-group sums (worth, firings), which data-parallel ranks all-reduce, so every rank
moves the same neurons. Reading them costs the host one small read every ``CHECK_EVERY`` steps until
the decision.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import nn

from gba_lens.saes.firing_worth import worth_sums

CHECK_EVERY = 10
"""Optimiser steps between two measurements."""
WINDOW = 10
"""Measurements per reading: each reading sums the last WINDOW measurements (100 optimiser steps)."""
HARM = 0.15
"""The lowest group's firings do harm when they are worth at most -HARM of the average firing's (per firing)."""
SHARE = 0.15
"""A group is idle when its firings are worth at most this share of the average firing's (per firing)."""
NOTHING = 0.05
"""Once the harm is over the block moves if the lowest group's firings are worth at most this share of the
average firing's: about nothing (docs/experiments/prior_free.md, thirty-sixth step)."""
LATEST = 0.4
"""Share of the run after which nothing moves: the moved neurons need the rest of it to find features."""


class IdleGroups(nn.Module):
    """The per-group worth of the firings, read every ``CHECK_EVERY`` steps over the last ``WINDOW``
    measurements, and the move once the lowest group's harm is over.

    Buffers (saved with training checkpoints):
        ring   [WINDOW, 2, K]  the summed worth and number of each group's firings of the last WINDOW
                               measurements (reduced across ranks)
        phase  [3]             measurements taken; the first one after which every reading had a positive
                               average (-1: none yet); 1 once the lowest group's firings did harm
        sums   [2, K]          the reading the decision was taken on (zeros until then)
        moved  [K]             1 for a group whose neurons joined the groups above it
        done   []              1 once the decision is taken (whether or not anything moved)
    """

    ring: torch.Tensor
    phase: torch.Tensor
    sums: torch.Tensor
    moved: torch.Tensor
    done: torch.Tensor

    def __init__(self, n_groups: int, device: str | torch.device = "cpu"):
        super().__init__()
        if n_groups < 2:
            raise ValueError(f"idle_groups moves neurons between groups: it needs n_groups >= 2, got {n_groups}")
        self.register_buffer("ring", torch.zeros(WINDOW, 2, n_groups, device=device))
        self.register_buffer("phase", torch.tensor([0, -1, 0], device=device))
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
        """Whether the step taken after ``step`` optimiser steps measures: every ``CHECK_EVERY``-th until
        the decision (``horizon``: the run's length in optimiser steps, which gba_lens's trainers give
        the SAE). Without a horizon the rule cannot tell how much of the run is left: it never acts, and
        says so once."""
        if horizon is None:
            if not self._warned:
                self._warned = True
                warnings.warn(f"idle_groups acts only in the first {LATEST:g} of the run, whose length this "
                              "trainer does not give: it is off for this run (set sae.training_horizon to the "
                              "run's optimiser steps)", stacklevel=2)
            return False
        return not self.finished and step % CHECK_EVERY == 0

    @torch.no_grad()
    def step(self, step: int, horizon: int | None, controller: Any, feature_acts: Float[torch.Tensor, "... d_sae"],
             decoder: Float[torch.Tensor, "d_sae d_in"], residual: Callable[[], Float[torch.Tensor, "... d_in"]],
             reduce: Callable[[nn.Module], None]) -> None:
        """One training step's part (after ``step`` optimiser steps): if due, :meth:`measure`; past
        ``LATEST`` of the run nothing moves. ``residual``: the batch's reconstruction error in the units
        ``decoder`` reconstructs (computed only when measured)."""
        if not self.due(step, horizon):
            return
        assert horizon is not None
        if step >= LATEST * horizon:
            self._finish()
            return
        self.measure(feature_acts, decoder, residual(), controller, reduce)

    @torch.no_grad()
    def measure(self, feature_acts: Float[torch.Tensor, "... d_sae"], decoder: Float[torch.Tensor, "d_sae d_in"],
                residual: Float[torch.Tensor, "... d_in"], controller: Any,
                reduce: Callable[[nn.Module], None]) -> None:
        """Measure this batch, read the last ``WINDOW`` measurements and, once the lowest group's harm is
        over, move the idle groups' neurons with ``controller.move_neurons`` (a ``GroupBiasAdaptation``).
        ``reduce``: combines a statistics module across data-parallel ranks."""
        self.observe(feature_acts, decoder, residual, controller.group)
        reduce(self)
        taken, positive_since, harmed = self.phase.tolist()
        self.ring[taken % WINDOW] = self._batch
        taken += 1
        self.phase[0] = taken
        if taken < WINDOW:
            return
        worth, firings = self.ring.sum(0)
        average = worth.sum() / firings.sum().clamp(min=1)
        lowest = float(worth[-1] / (average * firings[-1]).clamp(min=1e-12)) if float(average) > 0 else None
        if lowest is None:
            self.phase[1] = -1  # no reference to read the groups against (a young SAE's firings overshoot)
        elif positive_since < 0:
            self.phase[1] = taken
        elif not harmed:
            # harm counts only in a reading of measurements all taken after the first positive reading
            if taken - positive_since >= WINDOW and lowest <= -HARM:
                self.phase[2] = 1
        elif lowest > 0:
            self.sums.copy_(torch.stack([worth, firings]))
            controller.move_neurons(*self.decide(controller.group))

    def _finish(self) -> None:
        self.done.fill_(1)
        self._finished = True

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
        self._finish()
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
