"""The decoder refitted by least squares on the trained code (``decoder_refit``).

A GBA SAE's codes keep moving until the end of its run: the bias rule, the valleys, ``find_l0``
and ``firing_worth`` move thresholds while the learning rate decays, and the encoder learns faster
late (``encoder_lr_scale``). The decoder, trained by Adam at that decaying rate, ends behind the
codes it decodes. Once training is over the codes are fixed, and the decoder that reconstructs
them best has a closed form. On rows x with codes Z (in the SAE's own units: the input scaled as
the encoder reads it, minus the pre-bias b_pre, which stays),

    W_dec = argmin_W |X - b_pre - Z W|^2 + lambda |W - W_trained|^2
          = (Z^T Z + lambda I)^-1 (Z^T (X - b_pre) + lambda W_trained)

with lambda = ``RIDGE`` times the mean of diag(Z^T Z): a latent that fires rarely in the rows keeps
most of its trained row, one that never fires keeps all of it. The statistics are sums (Z^T Z,
Z^T (X - b_pre), |X - b_pre|^2), which data-parallel ranks all-reduce, so every rank solves the same
system. The rows are the run's last ones (gba_lens's trainers keep them: ``rows_to_keep``), so the
refit reads no sample the run did not train on.

Measured (docs/experiments/prior_free.md, forty-second step): on the stdlib LM's preset (six seeds)
explained variance rises by 0.0016-0.0023 on both hooks, CE loss recovered by 0.0002-0.0003 on
resid_pre and by 0.0023 on mlp_out on average (-0.0008 on one seed); BatchTopK's decoder, refitted the
same way, gains a quarter to a half as much EV. Holding the encoder and the thresholds still at the
end of the run instead lets the decoder catch up but stops the L0 short, and sums taken while the
codes still move decode worse: the refit needs the final codes. On the synthetic models every L0 stays;
the paper toy's EV rises (0.793 to 0.802), and the small model's F1 falls by 0.01.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import nn

ROWS = 131_072
"""Rows the refit reads at most: the run's last ones (whole steps; each data-parallel rank keeps its share)."""
MAX_ROW_BYTES = 1 << 29
"""Bytes of those rows (float32, kept on the host) at most: fewer rows for a wide input."""
MAX_LATENTS = 16_384
"""Widest SAE refitted: the system is d_sae x d_sae (2 GiB in float64 at this width). gba_lens's
trainers keep a wider SAE's decoder and say so."""
MIN_ROWS_PER_LATENT = 32
"""A run whose last rows are fewer than this per latent keeps its trained decoder (gba_lens's trainers say
so): a least-squares decoder from too few rows fits their noise. Measured down to 40 (the stdlib LM's
512 latents refitted on 20,480 rows gain a third (resid_pre) to two thirds (mlp_out) of the EV that
131,072 rows give), not below."""
RIDGE = 1e-3
"""lambda over the mean of diag(Z^T Z): how strongly a rarely firing latent keeps its trained row (on the
stdlib LM, 1e-2 keeps a fifth of mlp_out's CE gain back; 1e-3 gives what 1e-6 gives)."""
SPARSE_COST = 2000
"""On a CPU, a product of two active latents added one at a time costs about this many multiply-adds of
a dense float64 matrix product (measured on one core)."""


def rows_to_keep(total_samples: int, d_in: int) -> int:
    """How many of a run's last rows the refit reads (``ROWS``, fewer for a wide input or a short run)."""
    return max(1, min(ROWS, MAX_ROW_BYTES // (4 * d_in), total_samples))


class RefitStatistics(nn.Module):
    """The sums the least-squares decoder needs, over one rank's rows (all-reduced across ranks).

    Buffers (float64, so that sums in another order, over ranks, solve to the same decoder; float32 on
    a device without float64): ``gram`` [d_sae, d_sae] Z^T Z; ``cross`` [d_sae, d_in] Z^T (X - b_pre);
    ``energy`` [] |X - b_pre|^2; ``rows`` [] the rows read."""

    gram: torch.Tensor
    cross: torch.Tensor
    energy: torch.Tensor
    rows: torch.Tensor

    def __init__(self, d_sae: int, d_in: int, device: torch.device | str):
        super().__init__()
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.register_buffer("gram", torch.zeros(d_sae, d_sae, dtype=dtype, device=device))
        self.register_buffer("cross", torch.zeros(d_sae, d_in, dtype=dtype, device=device))
        self.register_buffer("energy", torch.zeros((), dtype=dtype, device=device))
        self.register_buffer("rows", torch.zeros((), dtype=dtype, device=device))

    @torch.no_grad()
    def add(self, codes: Float[torch.Tensor, "rows d_sae"], targets: Float[torch.Tensor, "rows d_in"]) -> None:
        """Add rows' codes and targets: dense products, or on a CPU, where the codes are sparse enough that
        it is cheaper (``SPARSE_COST``), the products of each row's active latents only (a 4,096-latent SAE
        at L0 17, 512 inputs: a sixth of the dense time)."""
        targets = targets.to(self.gram.dtype)
        self.energy.add_(targets.pow(2).sum())
        self.rows.add_(len(codes))
        active = codes != 0
        per_row = active.sum(1)
        pairs = int(per_row.pow(2).sum())
        d_sae = codes.shape[1]
        if codes.device.type != "cpu" or pairs * SPARSE_COST >= len(codes) * d_sae * d_sae:
            dense = codes.to(self.gram.dtype)
            self.gram.addmm_(dense.t(), dense)
            self.cross.addmm_(dense.t(), targets)
            return
        rows, latents = active.nonzero(as_tuple=True)  # row by row
        values = codes[rows, latents].to(self.gram.dtype)
        transposed = torch.sparse_coo_tensor(torch.stack([latents, rows]), values, (d_sae, len(codes)),
                                             check_invariants=False)  # valid by construction
        self.cross.add_(torch.sparse.mm(transposed, targets))
        # each active entry times every active entry of its row (itself included)
        first = torch.cumsum(per_row, 0) - per_row  # index of each row's first active entry
        partners = per_row[rows]
        left = torch.repeat_interleave(torch.arange(len(rows)), partners)
        offset = torch.arange(pairs) - torch.repeat_interleave(torch.cumsum(partners, 0) - partners, partners)
        right = first[rows[left]] + offset
        self.gram.view(-1).index_add_(0, latents[left] * d_sae + latents[right], values[left] * values[right])

    def reduce_statistics(self, all_reduce: Any) -> None:
        """Data-parallel training: the sums over every rank's rows."""
        for buffer in (self.gram, self.cross, self.energy, self.rows):
            all_reduce(buffer, "sum")

    def squared_error(self, decoder: Float[torch.Tensor, "d_sae d_in"]) -> float:
        """|X - b_pre - Z W|^2 over the rows, from the sums: |X - b_pre|^2 - 2 <W, cross> + <W, gram W>."""
        w = decoder.double()
        return float(self.energy - 2 * (w * self.cross.double()).sum() + (w * (self.gram.double() @ w)).sum())

    def solve(self, trained: Float[torch.Tensor, "d_sae d_in"]) -> Float[torch.Tensor, "d_sae d_in"]:
        """The least-squares decoder, pulled towards ``trained`` by ``RIDGE`` (float64; on the host where
        the device has none)."""
        device = self.gram.device if self.gram.device.type in ("cpu", "cuda") else torch.device("cpu")
        gram = self.gram.to(device, torch.float64, copy=True)  # the ridge is added to a copy
        ridge = RIDGE * gram.diagonal().mean().clamp(min=1e-12)
        gram.diagonal().add_(ridge)
        rhs = self.cross.to(device, torch.float64) + ridge * trained.to(device, torch.float64)
        return torch.cholesky_solve(rhs, torch.linalg.cholesky(gram))  # Z^T Z + lambda I: positive definite


@torch.no_grad()
def refit_decoder(sae: Any, rows: Float[torch.Tensor, "rows d_in"], batch_size: int = 4096) -> dict[str, float]:
    """Replace ``sae``'s decoder (a ``GBATrainingSAE``) by the least-squares one on the codes of ``rows``
    (its inputs, as the trainer gave them; all ranks' sums where ``sae.reduce_window_statistics``
    all-reduces). Returns the rows read (over all ranks) and their squared error over their energy,
    before and after."""
    if sae.cfg.d_sae > MAX_LATENTS:
        raise ValueError(f"decoder_refit solves a d_sae x d_sae system: at most {MAX_LATENTS} latents, "
                         f"got d_sae={sae.cfg.d_sae}")  # the trainers skip such an SAE and say so
    statistics = RefitStatistics(sae.cfg.d_sae, sae.cfg.d_in, sae.W_dec.device)
    was_training = sae.training
    sae.eval()  # no controller statistics from these passes
    try:
        for chunk in rows.split(batch_size):
            chunk = chunk.to(sae.W_dec.device, sae.dtype)
            codes = sae.encode(chunk)  # first: with per_token it sets the inputs' norms _scaled reads
            statistics.add(codes, sae._scaled(chunk) - sae.b_dec)
    finally:
        sae.train(was_training)
    sae.reduce_window_statistics(statistics)
    energy = max(float(statistics.energy), 1e-30)
    before = statistics.squared_error(sae.W_dec.detach())
    refitted = statistics.solve(sae.W_dec.detach())
    after = statistics.squared_error(refitted)
    sae.W_dec.data.copy_(refitted.to(sae.W_dec.device, sae.W_dec.dtype))
    return {"rows": float(statistics.rows), "error_before": before / energy, "error_after": after / energy}
