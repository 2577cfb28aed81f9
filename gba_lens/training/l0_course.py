"""Whether a GBA run's L0 had settled when training ended.

GBA has no sparsity coefficient: its L0 is where the bias rule and the encoder meet, and it keeps
falling long after the biases stop moving, as the encoder's directions grow selective at fixed
thresholds, until it settles at a fixed point (docs/experiments/prior_free.md, eighth step). A run
that stops on the way down ends at a higher L0, with a less converged dictionary, than the same
data gives with more samples, and nothing else tells the user.

The trainer adds each step's L0 (the SAE's ``step_density`` x d_sae, already reduced over
data-parallel ranks) into two windows, the last two tenths of the steps before the learning rate
starts to decay (of the whole run without a decay: a decaying learning rate stops the encoder, and
with it the L0, whether or not it had settled), as device tensors, so no step waits on the GPU; the
harness compares their means once, at the end. A run that finds its L0 (``find_l0``) also adds
its target scale (log s) to two windows of its own, the last two tenths of all its steps (the
controller does not decay with the learning rate): whether it was still raising or lowering the
targets is read from s itself, since the L0 can fall while s rises (the encoder growing selective
faster than the rising targets lower the thresholds). It also adds, over the same windows, the
variance that inputs on which no latent fires leave unexplained (:func:`silent_error`): where that
is a large share of the data's variance, the L0 ``find_l0`` found is far too low whether or not it
settled (data whose features are all frequent and independent give its ratio no level). These sums
are each process's own rows: under data parallelism rank 0's share is a sample of the whole.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float

WINDOW = 0.1
"""Each window is this fraction of the steps before the decay: the second-to-last and the last."""
FALL_TOLERANCE = 0.02
"""The last window's mean L0 may be this much (relative) below the one before before a run counts
as still falling: between what settled and unsettled runs of the lm preset show (prior_free.md,
ninth step)."""


SILENT_SHARE = 0.2
"""A ``find_l0`` run whose silent inputs (no latent fires) leave more than this share of the data's
variance unexplained over the last fifth of its steps is reported. Measured at the end of training
(docs/experiments/prior_free.md, twenty-fifth step): 0.43 ... 0.45 where features are all frequent
and independent (L0 a tenth of the truth); at most 0.09 on the paper toy, three Zipfian models, the
hierarchical synthbench model, the paper's small model and the stdlib LM (0 there); with the paper's
rule at most 0.08 on the synthetic ones, the counter-example included."""
SCALE_TOLERANCE = 0.05
"""A found L0's target scale s counts as still moving when the last window's mean s is this much
(relative) above or below the one before."""


class L0Course:
    """The L0 sums and step counts of the last two tenths of a run's steps before its learning rate
    decays (state saved with checkpoints)."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.sums = torch.zeros(2, device=device)
        self.steps = [0, 0]
        self.scale_sums = torch.zeros(2, device=device)  # log s, for find_l0
        self.scale_steps = [0, 0]
        self.silent_sums = torch.zeros(2, device=device)  # find_l0: silent inputs' error, the data's variance

    @torch.no_grad()
    def add(self, done_fraction: float, density: Float[torch.Tensor, ""], d_sae: int) -> None:
        """Count one step's L0 (``density``, the share of latents active, x ``d_sae``);
        ``done_fraction`` is the share of the steps before the decay done after it (over 1: a step
        of the decay, not counted). Steps outside the windows cost nothing."""
        window = _window(done_fraction)
        if window is not None:
            self.sums[window] += density.to(self.sums.dtype) * d_sae
            self.steps[window] += 1

    @torch.no_grad()
    def add_scale(self, run_fraction: float, log_scale: Float[torch.Tensor, ""]) -> None:
        """``find_l0``: count one step's target scale; ``run_fraction`` is the share of all the run's
        steps done after it."""
        window = _window(run_fraction)
        if window is not None:
            self.scale_sums[window] += log_scale.to(self.scale_sums.dtype)
            self.scale_steps[window] += 1

    @torch.no_grad()
    def add_silent(self, run_fraction: float, silent: Float[torch.Tensor, ""], variance: Float[torch.Tensor, ""]) -> None:
        """``find_l0``: count one step's :func:`silent_error` (both windows together)."""
        if _window(run_fraction) is not None:
            self.silent_sums += torch.stack([silent, variance]).to(self.silent_sums)

    @staticmethod
    def counts_silent(run_fraction: float) -> bool:
        """Whether a step at ``run_fraction`` of the run is in the windows (callers skip the
        computation of :func:`silent_error` otherwise)."""
        return _window(run_fraction) is not None

    def silent_share(self) -> float | None:
        """The share of the data's variance that silent inputs left unexplained in the windows (None
        before they start)."""
        silent, variance = self.silent_sums.cpu().tolist()
        return silent / variance if variance > 0 else None

    def means(self) -> tuple[float, float] | None:
        """The mean L0 of each window, or None while either has no step."""
        if min(self.steps) == 0:
            return None
        before, last = self.sums.cpu().tolist()
        return before / self.steps[0], last / self.steps[1]

    def still_falling(self, remedy: str = "it settles later, at a lower L0 and with a more converged dictionary; "
                                          "train on more samples") -> str | None:
        """One line when the L0 fell by more than FALL_TOLERANCE between the two windows (ending with
        ``remedy``), else None."""
        means = self.means()
        if means is None or means[0] <= 0 or means[1] >= means[0] * (1 - FALL_TOLERANCE):
            return None
        before, last = means
        return (f"GBA's L0 was still falling when training ended ({before:.3g} -> {last:.3g} latents per input "
                f"over the last fifth of training before any learning-rate decay, {last / before - 1:+.0%}): {remedy}")

    def scale_direction(self) -> int:
        """+1 (-1) when the mean target scale of the last window is more than SCALE_TOLERANCE above
        (below) the one before, else 0 (also while either window has no step)."""
        if min(self.scale_steps) == 0:
            return 0
        before, last = (self.scale_sums.cpu() / torch.tensor(self.scale_steps, dtype=self.scale_sums.dtype)).tolist()
        change = math.exp(last - before) - 1
        return 1 if change > SCALE_TOLERANCE else -1 if change < -SCALE_TOLERANCE else 0

    def found_l0_unsettled(self, at_bound: int) -> str | None:
        """A ``find_l0`` run's end-of-training line: its silent inputs leaving over ``SILENT_SHARE`` of
        the variance, else its target scale still moving or at a bound (``at_bound``,
        :meth:`L0Control.found_bound_reached`), else its L0 still falling, else None."""
        share = self.silent_share()
        if share is not None and share > SILENT_SHARE:
            return (f"find_l0's L0 is far too low: inputs on which no latent fires left {share:.0%} of the data's "
                    "variance unexplained over the last fifth of training (data whose features are all frequent and "
                    "independent give find_l0 no level, and it lowers the targets far under the true L0); "
                    "ask for an L0 with target_l0")
        return found_l0_unsettled(self.scale_direction(), at_bound) or self.still_falling(FOUND_L0_FALLING)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums.clone(), "steps": torch.tensor(self.steps),
                "scale_sums": self.scale_sums.clone(), "scale_steps": torch.tensor(self.scale_steps),
                "silent_sums": self.silent_sums.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = state["sums"].to(self.sums.device, self.sums.dtype).clone()
        self.steps = [int(n) for n in state["steps"].tolist()]
        if "scale_sums" in state:  # checkpoints written before it existed: no find_l0 run among them
            self.scale_sums = state["scale_sums"].to(self.sums.device, self.sums.dtype).clone()
            self.scale_steps = [int(n) for n in state["scale_steps"].tolist()]
        if "silent_sums" in state:  # checkpoints written before it existed: counted from the resumed step
            self.silent_sums = state["silent_sums"].to(self.sums.device, self.sums.dtype).clone()


@torch.no_grad()
def silent_error(
    sae_in: Float[torch.Tensor, "rows d_in"], sae_out: Float[torch.Tensor, "rows d_in"],
    feature_acts: Float[torch.Tensor, "rows d_sae"],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The squared error of the rows on which no latent fires, the rows' total variance (sum of
    squared deviations from their mean), and the number of those silent rows; dense or sparse (COO)
    ``feature_acts``."""
    x = sae_in.detach().reshape(-1, sae_in.shape[-1]).float()
    error = (x - sae_out.detach().reshape(x.shape).float()).pow(2).sum(-1)
    if feature_acts.is_sparse:
        fired = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        fired[feature_acts.coalesce().indices()[0]] = True
    else:
        fired = (feature_acts.detach().reshape(x.shape[0], -1) > 0).any(-1)
    return error[~fired].sum(), (x - x.mean(0)).pow(2).sum(), (~fired).sum()


def _window(fraction: float) -> int | None:
    """0 for the second-to-last tenth, 1 for the last (of ``fraction`` in (0, 1]), else None."""
    if not 1 - 2 * WINDOW < fraction <= 1:
        return None
    return 0 if fraction <= 1 - WINDOW else 1


FOUND_L0_FALLING = ("with find_l0 its targets had nearly settled: the L0 settles later and lower, as with fixed "
                    "targets, unless the data give find_l0 no level to stop at (features that are all frequent and "
                    "independent: it keeps falling, far under the true L0); train on more samples to see which, or "
                    "ask for an L0 with target_l0")
"""The remedy of a ``find_l0`` run whose scale had settled but whose L0 was still falling."""


def found_l0_unsettled(direction: int, at_bound: int) -> str | None:
    """The end-of-training line of a ``find_l0`` run whose target scale was still moving (``direction``
    from :meth:`L0Course.scale_direction`) or ended at one of its bounds (``at_bound``), else None."""
    if at_bound:
        return (f"find_l0's target scale ended at its {'upper' if at_bound > 0 else 'lower'} bound: the L0 it found "
                f"is the bound's, not the data's; ask for an L0 with target_l0"
                + (" or use fewer latents" if at_bound > 0 else ""))
    if direction < 0:
        return ("find_l0 was still lowering the targets when training ended: its L0 had not settled and may "
                "end lower with more samples (on data whose features are all frequent and independent it "
                "keeps falling, far under the true L0); train on more samples, or ask for an L0 with target_l0")
    if direction > 0:
        return ("find_l0 was still raising the targets when training ended: its L0 had not settled and may "
                "end higher with more samples (with more latents than the data has features, few per input, "
                "in few dimensions, the latents that fire together are aligned by their thresholds, which reads "
                "as mixtures, and it keeps raising it); train on more samples, ask for an L0 with target_l0, or "
                "use fewer latents")
    return None
