"""The firings reallocated between latents at one price (``decoder_refit``, JumpReLU gate).

GBA's thresholds come from its rules: each latent fires at its target, its valley, or where
``find_l0`` and ``firing_worth`` leave it. None of them asks what a firing adds to the
reconstruction once the run is over. Latent m firing on a row with output a = u + c (its
pre-activation without bias, plus its firing offset) lowers the row's squared error by

    worth = |r'|^2 - |r' - a d_m|^2 = 2 a d_m . r' - a^2 |d_m|^2

with r' the row's error without m's firing (r' = r + a d_m where m fires, r where it does not).
At a price lambda per firing, latent m's best threshold is the cut that maximises, over its rows,
the sum of (worth - lambda) over the firings it keeps. One lambda for every latent, chosen so that
the number of firings (the L0) stays, moves firings from latents whose marginal firings are worth
little to latents whose silent rows would be worth more: what BatchTopK's shared threshold does
per batch, here per latent on the decoder the refit fitted.

The cuts a round considers for latent m are t_m * RANGE^(2j / BINS - 1), j = 0 ... BINS (t_m = -b_m,
its threshold on u): at most a factor RANGE up or down, so a round moves thresholds within a trust
region, and keeps at least ``MIN_KEPT`` of each latent's firings. The statistics are, per
latent and per bin between two cuts, the rows' count and summed worth: sums, which data-parallel
ranks all-reduce, so that every rank chooses the same cuts. A latent whose threshold is 0 keeps it.

Measured (docs/experiments/prior_free.md, forty-fourth step; two rounds, each followed by the decoder
and offsets' fit): on the stdlib LM's preset (six seeds) explained variance rises by 0.0016-0.0021 on
resid_pre and 0.0007-0.0016 on mlp_out on every seed, CE loss recovered by 0.0001 and 0.0016 on
average, the L0 within 1%; F1 rises by 0.04-0.10 on the Zipf models and 0.045 on synthbench, and
synthbench's explained variance comes above BatchTopK's. The small model with more latents than
features loses one to three of its 48 features at cosine 0.9 on three seeds of nine: where a latent's
firings move, its refitted decoder row moves with them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import nn

from gba_lens.saes.refit_error import resolved_refit_error, row_weights

BINS = 64
"""Bins between the lowest and the highest cut (the middle cut is the current threshold)."""
RANGE = 4.0
"""A round moves a threshold at most this factor up or down."""
MIN_KEPT = 0.5
"""A round keeps at least this share of each latent's firings on the rows. With 0 (a latent may keep only
its rows above the highest cut) latents whose firings are worth little, mostly near-copies of another,
end up firing too rarely to show on evaluation samples: 36% of the quick paper-toy demo's latents,
against 7% with 0.5 and 0.7% without the reallocation, at the same EV (docs/experiments/prior_free.md,
forty-fourth step)."""
PRICE_STEPS = 60
"""Bisection steps on the price (float64: far below one firing's worth of change in the L0)."""


class CutStatistics(nn.Module):
    """Per latent and per bin of u / t between two cuts (bin BINS: above the highest), the rows' count
    and summed worth of a firing (float64 sums; ``reduce_statistics`` all-reduces them)."""

    count: torch.Tensor
    worth: torch.Tensor

    def __init__(self, d_sae: int, device: torch.device | str):
        super().__init__()
        device = torch.device(device)
        device = device if device.type in ("cpu", "cuda") else torch.device("cpu")  # float64 sums (MPS has none)
        self.register_buffer("count", torch.zeros(d_sae, BINS + 1, dtype=torch.float64, device=device))
        self.register_buffer("worth", torch.zeros(d_sae, BINS + 1, dtype=torch.float64, device=device))

    @torch.no_grad()
    def add(self, latents: Int[torch.Tensor, " entries"], ratio: Float[torch.Tensor, " entries"],
            worth: Float[torch.Tensor, " entries"]) -> None:
        """Add entries (a row's pre-activation u of one latent, from :func:`candidate_entries`): each one's
        latent, u / t, and the worth of that latent firing on that row."""
        latents, ratio, worth = (t.to(self.count.device) for t in (latents, ratio, worth))
        # cut j sits at ratio RANGE^(2j / BINS - 1); bin j holds ratios in (cut j, cut j + 1]
        position = (torch.log(ratio) / math.log(RANGE) + 1) * (BINS / 2)
        index = latents * (BINS + 1) + (torch.ceil(position) - 1).clamp_(0, BINS).long()
        size = self.count.numel()
        self.count.view(-1).add_(torch.bincount(index, minlength=size).to(self.count.dtype))
        self.worth.view(-1).add_(torch.bincount(index, weights=worth.to(self.worth.dtype), minlength=size))

    def reduce_statistics(self, all_reduce: Any) -> None:
        """Data-parallel training: the sums over every rank's rows."""
        all_reduce(self.count, "sum")
        all_reduce(self.worth, "sum")

    @torch.no_grad()
    def cuts(self) -> tuple[Int[torch.Tensor, " d_sae"], float]:
        """Each latent's cut (0 ... BINS; BINS // 2 keeps its threshold) at the price that keeps the rows'
        firings, and that price. A cut keeps the bins at and above it."""
        kept_count = self.count.flip(1).cumsum(1).flip(1)  # [d_sae, BINS + 1]: firings kept by cut j
        kept_worth = self.worth.flip(1).cumsum(1).flip(1)
        firings = float(kept_count[:, BINS // 2].sum())
        allowed = kept_count >= MIN_KEPT * kept_count[:, BINS // 2:BINS // 2 + 1]  # read now: a study may set it

        distance = (torch.arange(BINS + 1, device=self.count.device) - BINS // 2).abs()

        def at(price: float) -> torch.Tensor:
            value = (kept_worth - price * kept_count).masked_fill(~allowed, -torch.inf)
            # of equal cuts (no row between them) the nearest to the threshold: a cut moves only across rows
            best = value == value.max(1, keepdim=True).values
            return torch.where(best, -distance, -BINS - 1).argmax(1)

        def fired(cut: torch.Tensor) -> float:
            return float(kept_count.gather(1, cut[:, None]).sum())

        high = float(self.worth.abs().sum(1).max()) + 1.0  # above any firing's worth: every cut at the top
        low = -high
        for _ in range(PRICE_STEPS):
            price = (low + high) / 2
            if fired(at(price)) > firings:
                low = price
            else:
                high = price
        return at(high), high

    @staticmethod
    def thresholds(threshold: Float[torch.Tensor, " d_sae"], cut: Int[torch.Tensor, " d_sae"]) -> torch.Tensor:
        """The thresholds at ``cut`` (a latent whose threshold is 0 keeps it)."""
        return threshold * RANGE ** (2 * cut.to(threshold.dtype) / BINS - 1)


def candidate_entries(u: Float[torch.Tensor, "rows d_sae"], threshold: Float[torch.Tensor, " d_sae"]
                      ) -> tuple[Int[torch.Tensor, " entries"], Int[torch.Tensor, " entries"],
                                 Float[torch.Tensor, " entries"]]:
    """The entries of ``u`` (rows' pre-activations without bias) that a cut could reach: above the lowest
    cut of a latent whose threshold is positive (no more than a few times a latent's firings). Returns their
    rows, latents and u / t."""
    rows, latents = ((u > threshold / RANGE) & (threshold > 0)).nonzero(as_tuple=True)
    return rows, latents, u[rows, latents] / threshold[latents]


@contextmanager
def evaluating(sae: Any) -> Iterator[None]:
    """``sae`` in eval mode (its forward passes take no controller statistics), then back as it was."""
    was_training = sae.training
    sae.eval()
    try:
        yield
    finally:
        sae.train(was_training)


def encoded_rows(sae: Any, rows: Float[torch.Tensor, "rows d_in"], batch_size: int
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``rows`` in chunks of ``batch_size`` on the SAE's device, each encoded in eval mode (no controller
    statistics): its codes, its pre-activations and the chunk in the SAE's units (read after the encoding,
    which with ``per_token`` sets the norms ``_scaled`` reads)."""
    with evaluating(sae):
        for chunk in rows.split(batch_size):
            chunk = chunk.to(sae.W_dec.device, sae.dtype)
            codes, hidden_pre = sae.encode_with_hidden_pre(chunk)
            yield codes, hidden_pre, sae._scaled(chunk)


@torch.no_grad()
def reallocate_thresholds(sae: Any, rows: Float[torch.Tensor, "rows d_in"], batch_size: int = 4096
                          ) -> dict[str, float]:
    """Move the thresholds of ``sae`` (a ``GBATrainingSAE`` with the JumpReLU gate) to the cuts at one
    price per firing that keeps the firings of ``rows`` (all ranks' where ``sae.reduce_window_statistics``
    all-reduces); biases stay in the rule's range. Returns the price and the share of latents moved."""
    statistics = CutStatistics(sae.cfg.d_sae, sae.W_dec.device)
    bias = sae.b_enc.detach()
    threshold = (-bias).clamp(min=0)
    decoder = sae.W_dec.detach()
    energy = (decoder * decoder).sum(1)
    offset = sae.activation_offset()
    error_kind = resolved_refit_error(sae)
    # about 2^23 entries per chunk: a few [rows, d_sae] temporaries of it at once
    for codes, hidden_pre, scaled in encoded_rows(sae, rows, max(1, min(batch_size, (1 << 23) // sae.cfg.d_sae))):
        error = scaled - sae.b_dec - codes @ decoder  # in the SAE's units
        u = hidden_pre - bias
        row, latent, ratio = candidate_entries(u, threshold)
        output = u[row, latent] if offset is None else u[row, latent] + offset[latent]
        overlap = (error @ decoder.T)[row, latent]
        sign = torch.where(hidden_pre[row, latent] > 0, 1.0, -1.0)  # r' = r + a d_m where m fires
        worth = 2 * output * overlap + sign * output * output * energy[latent]
        weights = row_weights(scaled, error_kind)  # refit_error: each row's share of the error
        statistics.add(latent, ratio, worth if weights is None else worth * weights[row])
    sae.reduce_window_statistics(statistics)
    cut, price = statistics.cuts()
    cut = cut.to(bias.device)
    moved = statistics.thresholds(threshold, cut)
    controller = sae.bias_adaptation
    moved_bias = (-moved).clamp(controller.bias_min, controller.bias_max).to(sae.b_enc.dtype)
    sae.b_enc.data.copy_(torch.where(cut != BINS // 2, moved_bias, sae.b_enc.detach()))  # a kept cut: as it was
    return {"price": price, "moved": float((cut != BINS // 2).float().mean())}
