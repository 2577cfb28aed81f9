"""What a neuron's firings are worth (``firing_worth``): lower targets for latents that reconstruct little.

GBA holds every neuron at its target (with ``find_l0`` its third branch raises the live ones under
it), so on data with fewer features than latents the neurons that find no feature still fire: on
mixtures, at their group's frequency, and the L0 counts them. Their firings are worth little to the
reconstruction. Dropping latent m's activation z from a row changes the squared error by

    worth = |z d_m|^2 + 2 z d_m . r        (r: the row's reconstruction error, in the encoder's units)

(the firing's own energy, plus its overlap with what is still unexplained). From ``START`` of the
run on (every target stays until then), every ``CHECK_EVERY`` steps, on at most ``MAX_ROWS`` rows
of each rank's batch, each neuron's worth per firing and the average firing's worth (over every
latent's firings) are measured and averaged over checks (weight ``BETA``); a neuron whose firings
are worth less than ``share`` times the average firing's has its target scaled by

    multiplier_m = clamp(worth_m / (share * average), FLOOR, 1)      (1 while average <= 0)

so the rule lowers its bias until it fires rarely, while a latent on a feature (its firings worth
about what the average firing's are) keeps its target. A latent with no firing at a check keeps its
last reading. The statistics are per-neuron sums (worth, firings), which data-parallel ranks
all-reduce, so every rank takes the same decisions.

Why it waits: early in training the latents that will find a feature are still mixtures, worth
little, and a rule that acts from the start cuts some of them while they learn. Started at 0.7 of
the run, after they have arrived, it only reaches the spare ones. Measured
(docs/experiments/prior_free.md, thirty-first to thirty-third steps; GBA's default with data starts,
share 0.5): the paper's toy keeps the 99.5 / 99.2% of its features that data starts alone give it
(97.1 / 96.9 when the rule acts from the start, at share 0.3), the small model with more latents
than features ends at +15% of its true L0 (+37% with data starts alone), and the stdlib LM's
mlp_out comes closest to TopK's frontier. From random starts it costs the toy six points. Holding
the multiplier of a latent whose decoder still turns was tried: the turn does not tell a latent on
its way to a feature from one that jitters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import nn

CHECK_EVERY = 10
"""Optimiser steps between two measurements."""
START = 0.7
"""Share of the run's optimiser steps before the first measurement. Until then every target stays,
so that latents still turning from mixtures towards features are not cut while they learn."""
MAX_ROWS = 512
"""Rows of each rank's batch a measurement reads."""
BETA = 0.2
"""Weight of each measurement in the averages (about five checks of memory)."""
FLOOR = 0.05
"""No target is scaled by less than this."""


class FiringWorth(nn.Module):
    """The averaged worth per firing of each neuron and of the average firing, and the target multipliers.

    Buffers (saved with training checkpoints):
        worth       [d_sae]  each neuron's averaged worth per firing (0 before its first firing)
        measured    [d_sae]  whether the neuron has fired at a measurement
        average     []       the average firing's averaged worth
        checks      []       measurements that read a firing (0: ``average`` not set yet)
        multiplier  [d_sae]  what each neuron's target is scaled by (1 at the start)
        sums        [2, d_sae]  the last measurement's worth and firings per neuron (reduced across ranks)
    """

    worth: torch.Tensor
    measured: torch.Tensor
    average: torch.Tensor
    checks: torch.Tensor
    multiplier: torch.Tensor
    sums: torch.Tensor

    def __init__(self, d_sae: int, share: float, device: str | torch.device = "cpu"):
        super().__init__()
        if not 0.0 < share <= 1.0:
            raise ValueError(f"firing_worth must be in (0, 1], got {share}")
        self.share = share
        self.register_buffer("worth", torch.zeros(d_sae, device=device))
        self.register_buffer("measured", torch.zeros(d_sae, dtype=torch.bool, device=device))
        self.register_buffer("average", torch.zeros((), device=device))
        self.register_buffer("checks", torch.zeros((), device=device))
        self.register_buffer("multiplier", torch.ones(d_sae, device=device))
        self.register_buffer("sums", torch.zeros(2, d_sae, device=device))
        self._warned = False

    @torch.no_grad()
    def observe(
        self, feature_acts: Float[torch.Tensor, "... d_sae"], decoder: Float[torch.Tensor, "d_sae d_in"],
        residual: Float[torch.Tensor, "... d_in"],
    ) -> None:
        """This rank's sums of worth and firings per neuron over the first ``MAX_ROWS`` rows
        (:func:`worth_sums`)."""
        self.sums.copy_(worth_sums(feature_acts, decoder, residual))

    def reduce_statistics(self, all_reduce: Callable[[torch.Tensor, str], None]) -> None:
        """Data-parallel training: the sums over every rank's rows."""
        all_reduce(self.sums, "sum")

    @torch.no_grad()
    def update(self) -> None:
        """Fold the (reduced) sums into the averages and set the multipliers."""
        worth_sum, firings = self.sums
        total = firings.sum()
        if float(total) == 0:  # the one read of the device per measurement
            return
        average = worth_sum.sum() / total
        self.average.copy_(torch.where(self.checks == 0, average, self.average + BETA * (average - self.average)))
        self.checks.add_(1)
        fired = firings > 0
        per_firing = worth_sum / firings.clamp(min=1)
        moved = torch.where(self.measured, self.worth + BETA * (per_firing - self.worth), per_firing)
        self.worth.copy_(torch.where(fired, moved, self.worth))
        self.measured |= fired
        # While the average firing is worth nothing or less (a new SAE's firings overshoot: dropping
        # any one of them would lower the error), there is no reference yet: every target stays.
        reference = self.share * self.average
        scaled = (self.worth / reference.clamp(min=1e-12)).clamp(FLOOR, 1.0)
        self.multiplier.copy_(torch.where(self.measured & (reference > 0), scaled, torch.ones_like(scaled)))

    def due(self, step: int, horizon: int | None) -> bool:
        """Whether the step taken after ``step`` optimiser steps measures: every ``CHECK_EVERY``-th from
        ``START`` of the run (``horizon``: its length in optimiser steps, which gba_lens's trainers
        give the SAE). Without it the rule measures from the start, as it did before ``START``, and
        says so once."""
        if horizon is None and not self._warned:
            self._warned = True
            warnings.warn(f"firing_worth waits for {START:g} of the run, whose length this trainer does not "
                          "give: it measures from the start (set sae.training_horizon to the run's optimiser steps)",
                          stacklevel=2)
        return step > 0 and step % CHECK_EVERY == 0 and step >= START * (horizon or 0)


@torch.no_grad()
def worth_sums(
    feature_acts: Float[torch.Tensor, "... d_sae"], decoder: Float[torch.Tensor, "d_sae d_in"],
    residual: Float[torch.Tensor, "... d_in"],
) -> Float[torch.Tensor, "2 d_sae"]:
    """Per neuron, over the first ``MAX_ROWS`` rows: the sum of its firings' worth (|z d|^2 + 2 z d . r)
    and the number of its firings. ``feature_acts`` dense or sparse (COO, rows first), ``residual``
    the rows' reconstruction error in the units ``decoder`` reconstructs."""
    d_sae = decoder.shape[0]
    error = residual.detach().reshape(-1, residual.shape[-1])[:MAX_ROWS].float()
    if feature_acts.is_sparse:  # the sparse step (wide SAEs)
        acts = feature_acts.detach().coalesce()
        rows, latents = acts.indices()[0], acts.indices()[-1]
        values = acts.values().float()
        keep = (rows < MAX_ROWS) & (values != 0)
        rows, latents, values = rows[keep], latents[keep], values[keep]
    else:
        acts = feature_acts.detach().reshape(-1, d_sae)[:MAX_ROWS]
        rows, latents = acts.nonzero(as_tuple=True)
        values = acts[rows, latents].float()
    # Only the latents that fired are read (a latent that did not has no worth to add): at tens of
    # thousands of latents, passes over the whole decoder cost more than the firings' products.
    fired, slot = torch.unique(latents, sorted=True, return_inverse=True)
    directions = decoder.detach().index_select(0, fired).float()                 # [fired, d_in]
    # sum over m's firings of z^2 |d_m|^2, and of 2 z d_m . r = 2 d_m . (sum of z r): the second
    # as a sparse [fired, rows] code times the errors (about nnz x d_in, not rows x d_sae x d_in)
    code = torch.sparse_coo_tensor(torch.stack([slot, rows]), values, (fired.numel(), error.shape[0]),
                                   check_invariants=False)
    weighted_errors = torch.sparse.mm(code, error)                               # [fired, d_in]
    worth = torch.zeros(fired.numel(), device=directions.device).index_add_(0, slot, values * values)
    worth.mul_((directions * directions).sum(1)).add_(2 * (directions * weighted_errors).sum(1))
    sums = torch.zeros(2, d_sae, device=directions.device)
    sums[0].index_copy_(0, fired, worth)
    sums[1].index_add_(0, latents, torch.ones_like(values))
    return sums
