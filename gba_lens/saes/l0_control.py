"""A requested L0: GBA's targets scaled so that the SAE fires ``target_l0`` latents per input.

The paper's rule holds each neuron at or under its group's target p_k, so the SAE's L0 (the sum of
the neurons' firing frequencies) is at most the sum of the targets, and it falls short of it by the
neurons that sit under their targets. With ``target_l0`` set:

* the targets keep the geometric shape of HTF ... LTF, times one common scale s, started so that
  the targets sum to the requested L0 and then moved by an integral controller on the measured
  L0 (an exponential average over the bias-rule windows, like SynthSAEBench's L0 autotuner):

      L0_avg <- L0_avg + beta (L0_window - L0_avg),     L0_window = sum_m p_m
      e       = log target_l0 - log L0_avg
      log s  <- log s + eta * e    only while |e| < log CAPTURE,  p_k = min(s * p_k^geometric, P_MAX)

  Far from the request the rule itself moves the L0 (a new SAE fires on most inputs, and every
  neuron over its target is lowered whatever the target): integrating then would only wind the
  scale up (down) by the time the L0 arrives, and it would overshoot for hundreds of steps. The
  scale is also kept within a factor BOUND of its start.

* the rule gets a third branch: a live neuron under its target is raised by the dead branch's
  step (gamma_plus * rbar_k), so that every neuron fires at its target and the L0 at the request.

* a neuron firing over FAR_OVER times its target is the rule's to bring down, whatever its target
  (:meth:`L0Control.lowering_rate`). Over the request, the controller's error leaves out those neurons'
  excess (anti-windup: integrating it would wind the other targets down until, once they came down, the L0
  fell through the request), and once the L0 average has first come within DESCENT of the request, in a
  window over the request, each lowers its bias by the full step times its over-ratio over FAR_OVER,
  f / (FAR_OVER p). The paper's step (gamma_minus r_m, a hundredth of the neuron's peak) is sized for
  thresholds near their targets; on wide SAEs a told run's lower groups come to fire tens of times over their
  targets, and that step takes longer than the run to bring them down. Before the L0 has first come down,
  such a neuron takes the full step even where ``anneal_with_lr`` shrinks the others (grown steps there would
  silence most of the lower groups for good); under the request, the same steps as the others.

The only statistic is the rule's own window frequencies, so data-parallel training reduces nothing
more, and the scale evolves identically on every rank. Logged as ``gba/l0_average`` and
``gba/target_scale`` (s over its start).

With no request (``find_l0``) the scale starts at FOUND_START (the geometric default fires at about
that share of its targets' sum) and is moved by :mod:`gba_lens.saes.coactivation` instead of the
L0 average (:meth:`L0Control.follow`), within a factor FOUND_BOUND of its start.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import nn

BETA = 0.05
"""Weight of each window in the L0 average (T = 1: a window is a batch; ~20 batches of memory)."""
ETA = 0.02
"""Integral gain on log s per window."""
P_MAX = 0.5
"""No target above this frequency."""
CAPTURE = 2.0
"""The scale integrates only while the average L0 is within this factor of the request."""
BOUND = 4.0
"""... and stays within this factor of its start (targets summing to the request)."""
TOLERANCE = 0.1
"""What a request promises: at the end of training the last window's L0 is within this fraction of it
(:meth:`L0Control.unmet_request` says when it is not)."""
FAR_OVER = 4.0
"""With a request, a neuron firing over this many times its target (its group's times the scale, before
``firing_worth``'s multiplier) is the rule's to bring down: the controller leaves its excess out of the error, and
the rule lowers it by grown steps (0: neither). Told 16 at 2,048 latents of the stdlib LM ended 40% over the request
with one full step from 16x, 12% over with grown steps from 16x, and 5% under from 4x (docs/experiments/prior_free.md,
sixty-first to sixty-third steps). Not with ``find_l0``, whose valleys hold neurons at their features' frequencies,
far over their targets."""
DESCENT = 4.0
"""With a request, a new SAE's descent from its dense start is over once the L0 average has first come within this
factor of the request (``L0Control.reached``); grown steps wait for it. At 2 (``CAPTURE``) told 8 at 2,048 latents never
got there and ended at 16.5 (sixty-third step)."""
FOUND_START = 0.45
"""``find_l0``: the scale's start, so that the targets sum to this share of the geometric ones."""
FOUND_BOUND = 64.0
"""``find_l0``: the scale stays within this factor of its start."""


class L0Control(nn.Module):
    """The target scale and the L0 average (buffers, so a resumed run continues exactly).

    Buffers:
        base_target  [d_sae]  the geometric targets the scale multiplies
        log_scale    []       log s
        l0_average   []       the average window L0 (-1 before the first window)
        reached      []       (with a request) whether the L0 average has come within DESCENT of it
    """

    base_target: torch.Tensor
    log_scale: torch.Tensor
    l0_average: torch.Tensor
    reached: torch.Tensor

    def __init__(self, target_l0: float | None, base_target: Float[torch.Tensor, " d_sae"]):
        """``target_l0`` None: no request, the scale follows :meth:`follow` (``find_l0``)."""
        super().__init__()
        if target_l0 is not None and not 0.0 < target_l0 <= base_target.shape[0]:
            raise ValueError(f"target_l0 must be in (0, d_sae={base_target.shape[0]}], got {target_l0}")
        self.target_l0 = None if target_l0 is None else float(target_l0)
        self.register_buffer("base_target", base_target.clone())
        start = math.log(FOUND_START if self.target_l0 is None else self.target_l0 / float(base_target.sum()))
        self.start = start  # log s at the start (targets summing to the request)
        self.register_buffer("log_scale", torch.tensor(start, device=base_target.device))
        self.register_buffer("l0_average", torch.tensor(-1.0, device=base_target.device))
        if self.target_l0 is not None:
            self.register_buffer("reached", torch.tensor(False, device=base_target.device))
        self.window_l0: torch.Tensor | None = None  # the last window's L0 (None before one, as after a resume)

    @property
    def finds_l0(self) -> bool:
        """No request: the scale follows :meth:`follow` (``find_l0``)."""
        return self.target_l0 is None

    def relative_scale(self) -> torch.Tensor:
        """0-dim: s over its start (1 while the targets sum to the request)."""
        return (self.log_scale - self.start).exp()

    def scaled_targets(self) -> torch.Tensor:
        """[d_sae] the geometric targets times the current scale."""
        return (self.base_target * self.log_scale.exp()).clamp(max=P_MAX)

    def unmet_request(self) -> str | None:
        """One line saying that the last window's L0 (the L0 average before one) is off the request by more than
        TOLERANCE (None when it is within, or before any window). The training harness warns with it at the end.
        The last window, not the average: the average lags an L0 still moving by some twenty windows."""
        final = float(self.l0_average if self.window_l0 is None else self.window_l0)
        if self.target_l0 is None or final < 0 or abs(final / self.target_l0 - 1) <= TOLERANCE:
            return None
        return (f"target_l0={self.target_l0:g} not reached: the SAE fired {final:.3g} latents per input at the "
                f"end of training ({final / self.target_l0 - 1:+.0%}); the controller had not settled, so "
                f"train on more samples (a new SAE needs a few hundred steps to come down to a small L0)")

    @torch.no_grad()
    def step(self, target: Float[torch.Tensor, " d_sae"], frequency: Float[torch.Tensor, " d_sae"]) -> None:
        """Move the scale by this window's L0 and write the scaled targets into ``target``."""
        l0 = frequency.sum().to(self.l0_average.dtype)
        self.window_l0 = l0
        average = torch.where(self.l0_average < 0, l0, self.l0_average + BETA * (l0 - self.l0_average))
        self.l0_average.copy_(average)
        if self.target_l0 is not None:
            self.reached |= average < DESCENT * self.target_l0
            log_request = math.log(self.target_l0)
            captured = (log_request - torch.log(average.clamp(min=1e-6))).abs() < math.log(CAPTURE)
            # Anti-windup: over the request, the L0 that neurons far over their targets hold up is the rule's to
            # remove (it lowers them whatever their targets), so the scale integrates only what is left of it.
            held = torch.where(frequency > FAR_OVER * target, frequency - target, 0.0).sum() if FAR_OVER > 0 else 0.0
            measured = torch.maximum(average - held, average.clamp(max=self.target_l0))
            error = log_request - torch.log(measured.clamp(min=1e-6))
            self.log_scale.add_(torch.where(captured, ETA * error, 0.0))
            self.log_scale.clamp_(self.start - math.log(BOUND), self.start + math.log(BOUND))
        target.copy_(self.scaled_targets())

    def lowering_rate(
        self, rate: float, target: Float[torch.Tensor, " d_sae"], frequency: Float[torch.Tensor, " d_sae"]
    ) -> float | torch.Tensor:
        """How many full steps the rule's lowering step takes ([d_sae] with a request, else ``rate``, the annealed
        share): for the neurons over FAR_OVER times their ``target``, f / (FAR_OVER p) in a window over the request
        once the L0 average has come within DESCENT of it, and 1 before it has; for the others, ``rate``."""
        if self.finds_l0 or FAR_OVER <= 0:
            return rate
        over_ratio = frequency / (FAR_OVER * target)
        far = over_ratio > 1
        grows = far & self.reached & (self.window_l0 > self.target_l0)
        return torch.where(grows, over_ratio, torch.where(far & ~self.reached, 1.0, rate))

    def found_bound_reached(self) -> int:
        """``find_l0``: +1 (-1) when the scale sits at its upper (lower) bound, FOUND_BOUND times (over)
        its start, else 0."""
        offset = float(self.log_scale) - self.start
        limit = math.log(FOUND_BOUND) * (1 - 1e-6)
        return 1 if offset >= limit else -1 if offset <= -limit else 0

    @torch.no_grad()
    def follow(self, ratio: float, gain: float) -> None:
        """``find_l0``: log s <- log s + gain (ratio - 1) (the targets follow at the next window)."""
        self.log_scale.add_(gain * (ratio - 1.0))
        self.log_scale.clamp_(self.start - math.log(FOUND_BOUND), self.start + math.log(FOUND_BOUND))
