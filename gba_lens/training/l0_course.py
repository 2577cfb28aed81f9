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
harness compares their means once, at the end.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

WINDOW = 0.1
"""Each window is this fraction of the steps before the decay: the second-to-last and the last."""
FALL_TOLERANCE = 0.02
"""The last window's mean L0 may be this much (relative) below the one before before a run counts
as still falling: between what settled and unsettled runs of the lm preset show (prior_free.md,
ninth step)."""


class L0Course:
    """The L0 sums and step counts of the last two tenths of a run's steps before its learning rate
    decays (state saved with checkpoints)."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.sums = torch.zeros(2, device=device)
        self.steps = [0, 0]

    @torch.no_grad()
    def add(self, done_fraction: float, density: Float[torch.Tensor, ""], d_sae: int) -> None:
        """Count one step's L0 (``density``, the share of latents active, x ``d_sae``);
        ``done_fraction`` is the share of the steps before the decay done after it (over 1: a step
        of the decay, not counted). Steps outside the windows cost nothing."""
        if not 1 - 2 * WINDOW < done_fraction <= 1:
            return
        window = 0 if done_fraction <= 1 - WINDOW else 1
        self.sums[window] += density.to(self.sums.dtype) * d_sae
        self.steps[window] += 1

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

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums.clone(), "steps": torch.tensor(self.steps)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = state["sums"].to(self.sums.device, self.sums.dtype).clone()
        self.steps = [int(n) for n in state["steps"].tolist()]
