"""How far each group's decoder directions turned since the last logging step (a training metric).

A neuron that has found a feature keeps its decoder direction; one that has not (a mixture, or the
tail of the interference it fires on) keeps turning as the neurons around it change. Each logging
step compares the unit decoder rows with those of the previous one:

    stability_k = mean over the sampled neurons m of group k of  cos(d_m now, d_m at the last log)

1 means the group's directions stood still. On data with known features the neurons within
cosine 0.9 of a true feature stay near 1 while the unmatched ones turn (docs/experiments/prior_free.md,
tenth step); on a user's activations, where nothing is known, a group that stays well under the
others late in training holds neurons that found nothing at its target frequency. The value depends
on how many steps lie between two logging steps: compare groups within a run, not across runs.

Only every k-th row is kept (at most ``MAX_ROWS``; the groups are contiguous, so each is sampled in
proportion to its size), so the snapshot costs ``MAX_ROWS x d_in`` floats, not a second decoder.
Nothing is saved with checkpoints: after a resume, the first logging step only takes the snapshot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float

MAX_ROWS = 4096
"""Decoder rows kept between logging steps (every ``ceil(d_sae / MAX_ROWS)``-th neuron)."""


class DecoderStability:
    """The snapshot of the sampled decoder rows, and each row's cosine against it (the per-group
    means are :meth:`GroupBiasAdaptation.group_means` over ``rows``)."""

    def __init__(self, d_sae: int):
        self.rows = torch.arange(0, d_sae, -(-d_sae // MAX_ROWS))
        """The sampled neurons (every k-th), on the decoder's device after the first call."""
        self._previous: torch.Tensor | None = None

    @torch.no_grad()
    def cosines(self, decoder: Float[torch.Tensor, "d_sae d_in"]) -> Float[torch.Tensor, " rows"] | None:
        """Each sampled row's cosine with itself at the previous call (``self.rows`` says which
        neurons), then keep these rows for the next call; None on the first call."""
        self.rows = self.rows.to(decoder.device)
        current = F.normalize(decoder.detach()[self.rows].float(), dim=1)
        previous, self._previous = self._previous, current
        if previous is None or previous.device != current.device:
            return None
        return (previous * current).sum(1)
