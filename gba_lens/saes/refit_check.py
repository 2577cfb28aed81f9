"""Whether a run's last rows are enough for the decoder refit (``decoder_refit``).

A least-squares decoder row holds d_in numbers, fitted on the rows where its latent fires. From too few firings
it fits their noise and reconstructs other rows worse than the trained decoder. How few is too few is not one
number: it turns on the input's width, how often the latents fire, how many are dead and how alike they are.
Where the rows give each live latent at least ``TRUSTED_FIRINGS`` firings per input, the refit is made on every
row: every refit measured there gained. Below that, :func:`gba_lens.saes.decoder_refit.refit_decoder` refits a copy of
the SAE on every row but every ``HELD_OUT``-th (:func:`split_rows`), and takes it only where it reconstructs the
held-out rows better than the trained SAE (:func:`held_out_error`); else the SAE stays as trained. The errors
are sums, which data-parallel ranks all-reduce (:class:`Sums`), so every rank decides alike; each rank holds out
every ``HELD_OUT``-th of its own rows (the rows one process would hold out where each rank's share of a batch
is a multiple of ``HELD_OUT``).

Measured (docs/experiments/prior_free.md, fifty-first step; "per input": each live latent's firings on the rows
over d_in): the paper toy (42 inputs, 1,024 latents) refitted on every row at 1.2 / 3.3 / 10.8 firings per input
changes EV by -0.75 / -0.024 / +0.019 against its trained decoder (+0.031 at 87); the stdlib LM's resid_pre (128
inputs) at 0.8 / 1.7 / 3.4 by -0.0066 / -0.0008 / +0.0018, mlp_out at 1.6 / 3.1 by +0.0009 / +0.0030; a 4,096-latent
SAE at 10 and 20 keeps four fifths and nine tenths of its gain at 81. Neither rows per latent nor firings per
input has one break-even on both.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import nn

from gba_lens.saes.refit_error import resolved_refit_error, row_weights
from gba_lens.saes.threshold_reallocation import encoded_rows

TRUSTED_FIRINGS = 10.0
"""Firings per input of the average live latent from which the refit is made on every row unchecked: every
refit measured from 10 up gained (above)."""
HELD_OUT = 8
"""Below ``TRUSTED_FIRINGS``, every this-th row is held out of a copy's refit, which is taken only where it
reconstructs them better than the trained SAE."""


def split_rows(rows: Float[torch.Tensor, "rows d_in"]) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` but every ``HELD_OUT``-th, and those."""
    held = (torch.arange(len(rows)) % HELD_OUT) == HELD_OUT - 1
    return rows[~held], rows[held]


@torch.no_grad()
def held_out_error(sae: Any, rows: Float[torch.Tensor, "rows d_in"], batch_size: int) -> float:
    """``rows``' squared error over their energy with ``sae`` (all ranks', in the SAE's own units, weighted as
    the refit weighs them: :mod:`gba_lens.saes.refit_error`)."""
    error_kind = resolved_refit_error(sae)
    sums = torch.zeros(2, dtype=torch.float64, device=sae.W_dec.device)  # energy, error
    for codes, _, scaled in encoded_rows(sae, rows, batch_size):
        target, weights = scaled - sae.b_dec, row_weights(scaled, error_kind)
        for i, values in enumerate((target.pow(2).sum(1), (target - codes @ sae.W_dec).pow(2).sum(1))):
            sums[i] += (values if weights is None else values * weights).double().sum()
    sae.reduce_window_statistics(Sums(sums))
    return float(sums[1]) / max(float(sums[0]), 1e-30)


class Sums(nn.Module):
    """A tensor of sums as a module's buffer, for ``sae.reduce_window_statistics``."""

    def __init__(self, sums: torch.Tensor):
        super().__init__()
        self.register_buffer("sums", sums)

    def reduce_statistics(self, all_reduce: Any) -> None:
        all_reduce(self.sums, "sum")
