"""Target search: neurons whose decoder direction keeps turning look for a feature at higher targets.

A neuron that has found a feature keeps its decoder direction; one that has not keeps turning as
the neurons around it change (:mod:`gba_lens.saes.decoder_stability`). A neuron whose group target
lies far below the frequency of every feature left to take finds nothing there (the paper's toy:
one frequency, above the lower groups' targets). With ``target_search`` each neuron's target is its
group's target p_k times its own scale s_m (1 at the start), and every CHECK_INTERVAL optimiser
steps each unit decoder row d_m is compared with itself CHECK_INTERVAL steps earlier:

    c_m = cos(d_m now, d_m at the last check)
    n_m = consecutive checks with c_m < TURNING_COSINE (0 at a check where c_m is not under it)
    search  (FIRST_RAISE <= step < RETURN_FROM * horizon):  n_m >= TURNING_CHECKS: s_m <- min(RAISE * s_m, p_max / p_k)
    return  (step >= RETURN_FROM * horizon):                c_m < STEADY_COSINE:    s_m <- 1

with p_max the highest group target and the horizon the run's length in optimiser steps. In the
search a neuron that keeps turning has its target doubled at each check, so it fires more often
until it settles on a feature; in the return, a neuron that has still found nothing goes back to its
group's target, so that it stops firing on mixtures at a raised target. Neurons that settled keep
their raised targets. A neuron with no feature at its target turns at every check; a neuron of a
dictionary that is still arranging itself (a language model's early in training) turns at some
checks and not at others, so only a run of TURNING_CHECKS raises it. The return asks more of a
raised neuron (steady: cosine at least STEADY_COSINE) than the raise asks of a turning one, so that
a raised neuron still drifting goes back.

The statistic is the decoder itself, the same on every data-parallel rank, so nothing is reduced
and every rank takes the same decisions. The snapshot is one float32 copy of the unit decoder rows
(training state, saved with checkpoints; an exported SAE carries none of it).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

CHECK_INTERVAL = 100
"""Optimiser steps between two decoder checks."""
FIRST_RAISE = 200
"""No target is raised before this step (a new SAE's directions all turn)."""
TURNING_COSINE = 0.95
"""A neuron whose decoder cosine with the last check is under this turned at that check."""
TURNING_CHECKS = 4
"""Consecutive checks at which a neuron turned after which its target is raised (and at each further one)."""
STEADY_COSINE = 0.97
"""In the return, a neuron whose decoder cosine with the last check is under this goes back."""
RAISE = 2.0
"""Factor on a raised neuron's target per check in the search."""
RETURN_FROM = 0.75
"""Fraction of the run after which neurons that are not steady go back to their group's target."""


class TargetSearch(nn.Module):
    """The decoder snapshot and each neuron's target scale (GBA's ``target_search`` option).

    Buffers (saved with training checkpoints):
        previous   [d_sae, d_in]  unit decoder rows at the last check
        checked    []             1 once ``previous`` holds a check
        scale      [d_sae]        each neuron's target over its group's, s_m
        turning_checks [d_sae]    consecutive checks at which each neuron was turning, n_m
    """

    previous: torch.Tensor
    checked: torch.Tensor
    scale: torch.Tensor
    turning_checks: torch.Tensor

    def __init__(self, d_sae: int, d_in: int, device: str | torch.device = "cpu"):
        super().__init__()
        self.register_buffer("previous", torch.zeros(d_sae, d_in, device=device))
        self.register_buffer("checked", torch.zeros((), device=device))
        self.register_buffer("scale", torch.ones(d_sae, device=device))
        self.register_buffer("turning_checks", torch.zeros(d_sae, device=device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "turning_checks"
        if key not in state_dict and prefix + "scale" in state_dict:
            warnings.warn("this checkpoint's target search predates the count of turning checks: the "
                          "resumed run counts them from its next check", stacklevel=2)
            state_dict[key] = torch.zeros_like(self.turning_checks)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def due(step: int) -> bool:
        """Whether optimiser step ``step`` (0-based) checks the decoder."""
        return step % CHECK_INTERVAL == 0

    @torch.no_grad()
    def check(
        self,
        decoder: Float[torch.Tensor, "d_sae d_in"],
        group_target: Float[torch.Tensor, " d_sae"],
        step: int,
        horizon: int,
    ) -> Float[torch.Tensor, " d_sae"] | None:
        """Compare the decoder rows with the last check, move the scales (see the module) and keep
        the rows for the next check. ``group_target`` is each neuron's group target p_k. Returns the
        cosines c_m (None at the first check, which only takes the snapshot)."""
        current = F.normalize(decoder.detach().float(), dim=1)
        cosine = (current * self.previous).sum(1) if bool(self.checked) else None
        self.previous.copy_(current)
        self.checked.fill_(1)
        if cosine is None:
            return None
        turned = cosine < TURNING_COSINE
        self.turning_checks.copy_(torch.where(turned, self.turning_checks + 1, torch.zeros_like(self.turning_checks)))
        if step >= RETURN_FROM * horizon:
            self.scale.copy_(torch.where(cosine < STEADY_COSINE, torch.ones_like(self.scale), self.scale))
        elif step >= FIRST_RAISE:
            ceiling = group_target.max() / group_target
            raised = torch.minimum(self.scale * RAISE, ceiling)
            self.scale.copy_(torch.where(self.turning_checks >= TURNING_CHECKS, raised, self.scale))
        return cosine

    def targets(self, group_target: Float[torch.Tensor, " d_sae"]) -> Float[torch.Tensor, " d_sae"]:
        """Each neuron's target, s_m p_k (never above the highest group target)."""
        return torch.minimum(group_target * self.scale, group_target.max())
