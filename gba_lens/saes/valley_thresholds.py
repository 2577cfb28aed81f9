"""Valley thresholds: each neuron's threshold moved to the valley of its own pre-activation histogram.

GBA's bias rule makes a neuron fire at (at most) its group's target frequency. A neuron that has
found a feature rarer than its target then keeps firing at the target, on inputs where the feature
is absent: its firing frequency is the prior's, not the feature's. Its pre-activation u = w . x over
the data shows what it should be: a large mode near 0 (inputs without the feature, spread by
interference) and a second mode further out (inputs with it). With ``valley_thresholds`` each
neuron keeps a histogram of u over a window of samples (about 10k), and when the histogram has a
second mode the neuron's threshold moves to the lowest bin between the two modes:

    smoothed h_j (a [1, 2, 1] / 4 kernel), j over BINS bins of u in [0, 1.25 * max u of the last window]
    noise mode  = argmax_j h_j
    mode score  = (h_j + 1) / (min_{noise mode <= i <= j} h_i + 1)     for j past the noise mode
    second mode = argmax_j score_j, kept if its score >= PROMINENCE and h_j >= MIN_MODE_COUNT
    valley      = argmin h_i over noise mode <= i <= second mode
    b_m <- b_m + STEP * (-(valley's u) - b_m), clamped to the bias range

(with ``anneal_with_lr``, STEP times the bias rule's rate: the learning rate over its peak).

A neuron without a second mode (a mixture, or a feature buried in interference) is left to the
bias rule. The threshold then follows the data in both directions: down for a feature more
frequent than the target, up for a rarer one. The group targets stay the search: they decide which
neurons get selective enough to find a feature at all.

Statistics are sums (histogram counts, samples) and a maximum (max u). Data-parallel training
all-reduces each batch's counts before they are added (so that every rank holds the global window,
and a checkpoint written mid-window by one rank resumes exactly) and the maximum before a window
is applied. To keep the cost a few percent of a training step, each step adds at most
ROWS_PER_STEP rows of the global batch (every k-th row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import nn

BINS = 32
"""Histogram bins over [0, 1.25 * the last window's max u] (one more, unused, counts u <= 0)."""
ROWS_PER_STEP = 512
"""At most this many rows of each global batch enter the histogram (every k-th row)."""
WINDOW_SAMPLES = 10_240
"""Samples per histogram window (the valley step runs when a window is full)."""
PROMINENCE = 2.0
"""A second mode must be at least twice as high as the lowest bin between it and the noise mode.
Lower values find more valleys: better on features that separate from the interference (Zipf
models), worse where they overlap it (synthbench, the stdlib LM); see docs/experiments/prior_free.md."""
MIN_MODE_COUNT = 5.0
"""... and hold at least this many (smoothed) samples in its bin."""
STEP = 1.0
"""Fraction of the way to the valley a threshold moves per window (1: all the way)."""
LATENTS_PER_PASS = 512
"""On the CPU, the histogram counts this many latents' columns at a time, so that the counters
bincount scatters into (512 x 33) stay in cache: at 65,536 latents a single pass over every latent
took three times as long, and passes of 1,024 latents 1.2 to 1.6 times as long as passes of 256 or
512 (docs/experiments/prior_free.md, forty-fourth step). On an accelerator one pass counts every
latent."""


@torch.no_grad()
def find_valleys(
    histogram: Float[torch.Tensor, "d_sae bins"],
) -> tuple[Bool[torch.Tensor, " d_sae"], Int[torch.Tensor, " d_sae"]]:
    """Which neurons' histograms have a second mode, and the valley bin before it (see the module).

    Returns ``(has_valley, valley_bin)``; ``valley_bin`` is meaningful where ``has_valley``.
    """
    n_bins = histogram.shape[1]
    smoothed = histogram.clone()
    smoothed[:, 1:-1] = 0.25 * histogram[:, :-2] + 0.5 * histogram[:, 1:-1] + 0.25 * histogram[:, 2:]
    bins = torch.arange(n_bins, device=histogram.device)[None]
    noise_mode = smoothed.argmax(1, keepdim=True)
    past_noise = bins >= noise_mode
    big = torch.full_like(smoothed, float("inf"))
    lowest_so_far = torch.cummin(torch.where(past_noise, smoothed, big), 1).values
    score = torch.where(bins > noise_mode, (smoothed + 1) / (lowest_so_far + 1), torch.zeros_like(smoothed))
    score[:, -2:] = 0  # the last bin also holds everything beyond the range: no mode
    best, mode = score.max(1)
    has_valley = (best >= PROMINENCE) & (smoothed.gather(1, mode[:, None])[:, 0] >= MIN_MODE_COUNT)
    between = past_noise & (bins <= mode[:, None])
    valley_bin = torch.where(between, smoothed, big).argmin(1)
    return has_valley, valley_bin


class ValleyWindow(NamedTuple):
    """What one window's valleys say (returned by :meth:`ValleyThresholds.apply`)."""

    fraction: torch.Tensor
    """0-dim: the fraction of neurons with a valley."""
    has_valley: torch.Tensor
    """[d_sae] bool: which neurons had one."""
    frequency: torch.Tensor
    """[d_sae] the fraction of the window's samples above each neuron's valley (its feature's
    frequency; meaningful where ``has_valley``)."""


class ValleyThresholds(nn.Module):
    """The per-neuron histograms and the valley step (GBA's ``valley_thresholds`` option).

    Buffers (saved with training checkpoints; an exported SAE carries none of them):
        histogram  [d_sae, BINS + 1]  counts of u per bin since the last window (column 0: u <= 0)
        scale      [d_sae]            the bins span [0, 1.25 * scale] (the last window's max u)
        peak       [d_sae]            max u since the last window
        n_samples  []                 samples in the window (of the global batch)
    """

    histogram: torch.Tensor
    scale: torch.Tensor
    peak: torch.Tensor
    n_samples: torch.Tensor

    def __init__(self, d_sae: int, device: str | torch.device = "cpu"):
        super().__init__()
        self.register_buffer("histogram", torch.zeros(d_sae, BINS + 1, device=device))
        self.register_buffer("scale", torch.ones(d_sae, device=device))
        self.register_buffer("peak", torch.zeros(d_sae, device=device))
        self.register_buffer("n_samples", torch.zeros((), device=device))
        self._count: int | None = None  # n_samples on the host, so that no step waits on the GPU

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._count = None  # read again from the loaded buffer

    @torch.no_grad()
    def observe(self, hidden_pre: Float[torch.Tensor, "rows d_sae"], bias: Float[torch.Tensor, " d_sae"],
                global_rows: int, batch_peak: Float[torch.Tensor, " d_sae"] | None = None,
                combine_counts: Callable[[torch.Tensor], None] | None = None,
                rows_peak: Float[torch.Tensor, " d_sae"] | None = None) -> None:
        """Add u = y - b of every k-th row of this batch (``hidden_pre`` y = u + b). ``global_rows``
        is the batch size over all ranks, so that each rank of a data-parallel run takes the rows
        one process would (k divides the per-rank batch when that is a multiple of k).
        ``batch_peak``: max y of every row of the (global) batch, which the bias rule has already
        taken; the window's max u is then read from it instead of from the rows taken here.
        ``combine_counts``: turns this rank's counts of the batch, in place, into the global batch's
        (data parallel: an all-reduce) before they are added. ``rows_peak``: max y of this rank's rows
        before any reduction across ranks (None: ``batch_peak``'s, or the rows'), which tells whether
        every u here is finite (see :meth:`_block_counts`)."""
        stride = max(1, global_rows // ROWS_PER_STEP)
        rows = hidden_pre.detach()[::stride].float()
        bias = bias.detach().float()
        d_sae = rows.shape[1]
        peak = rows.amax(0) if batch_peak is None else batch_peak.detach().float()
        self.peak.copy_(torch.maximum(self.peak, peak - bias))  # max u = max y - b
        per_width = (BINS / 1.25) / self.scale
        offset = 1 - bias * per_width
        counts = torch.empty(d_sae * (BINS + 1), dtype=self.histogram.dtype, device=rows.device)
        on_cpu = rows.device.type == "cpu"
        block = min(LATENTS_PER_PASS if on_cpu else d_sae, d_sae)
        # Finite rows are told from [d_sae] vectors on the CPU (no device to wait on; a sum that
        # overflows only takes the slower way); elsewhere every entry is mapped, which costs little there.
        local_peak = peak if rows_peak is None else rows_peak.detach()
        finite = on_cpu and bool(torch.isfinite(local_peak.sum() + per_width.sum()) & (per_width.amin() > 0))
        narrow = on_cpu and block * (BINS + 1) <= torch.iinfo(torch.int16).max
        counter_starts = torch.arange(0, block * (BINS + 1), BINS + 1, device=rows.device,
                                      dtype=torch.int16 if narrow else torch.int32)
        for first in range(0, d_sae, block):
            last = min(first + block, d_sae)
            counts[first * (BINS + 1):last * (BINS + 1)] = self._block_counts(
                rows[:, first:last], offset[first:last], per_width[first:last], counter_starts[:last - first], finite)
        if combine_counts is not None:
            combine_counts(counts)
        self.histogram.view(-1).add_(counts)
        added = -(-global_rows // stride)
        if self._count is None:
            self._count = int(self.n_samples.item())
        self._count += added
        self.n_samples += added

    @staticmethod
    def _block_counts(rows: Float[torch.Tensor, "rows block"], offset: Float[torch.Tensor, " block"],
                      per_width: Float[torch.Tensor, " block"], counter_starts: Int[torch.Tensor, " block"],
                      finite: bool = False) -> Int[torch.Tensor, " counters"]:
        """Histogram counts of a block of latents, flattened latent-major ([block * (BINS + 1)]);
        ``counter_starts``: each latent's first counter in that layout (0, BINS + 1, ...), in the
        integer type the columns are counted in.

        Column 1 + floor(u / bin width), clamped to [0, BINS] (0: u <= 0), in one pass over the rows:
        with a = 1 / bin width, 1 + u * a = y * a + (1 - b * a). Truncating the clamped, non-negative
        value is the floor. On the CPU the columns are counted in int16 where the block's counters fit
        (512 latents: 16,896; int32 elsewhere), which halves the memory that the cast, the offsets'
        addition and bincount's own passes read. A NaN u (diverged training, which the trainer then
        stops with its own message) goes to column 0 instead of reaching bincount as a negative index;
        ``finite`` says there is none (the rows' max is finite, so b is, and a is finite and > 0, so
        that u = -inf gives -inf), and skips that pass (docs/experiments/prior_free.md, forty-seventh
        step)."""
        column = torch.addcmul(offset, rows, per_width)
        if not finite:
            column.nan_to_num_(0.0)
        column = column.clamp_(0, BINS).to(counter_starts.dtype)
        column += counter_starts
        return torch.bincount(column.view(-1), minlength=counter_starts.numel() * (BINS + 1))

    @property
    def window_full(self) -> bool:
        return self._count is not None and self._count >= WINDOW_SAMPLES

    def reduce_statistics(self, all_reduce: Callable[[torch.Tensor, str], None]) -> None:
        """Combine the window across data-parallel ranks: its max u (the histogram and
        ``n_samples`` are the global batch's already, see :meth:`observe`)."""
        all_reduce(self.peak, "max")

    @torch.no_grad()
    def apply(self, bias: Float[torch.Tensor, " d_sae"], bias_min: float, bias_max: float,
              rate: float = 1.0) -> ValleyWindow:
        """Move the thresholds of the neurons with a valley (``STEP`` times ``rate`` of the way), start a
        new window; returns which neurons had one and their frequency above it (tensors: nothing
        waits on the GPU)."""
        counts = self.histogram[:, 1:]
        has_valley, valley_bin = find_valleys(counts)
        above = torch.arange(counts.shape[1], device=counts.device)[None] > valley_bin[:, None]
        frequency = (counts * above).sum(1) / self.n_samples.clamp(min=1)
        valley_u = (valley_bin.to(bias.dtype) + 0.5) * (1.25 / BINS) * self.scale.to(bias.dtype)
        moved = (bias + STEP * rate * (-valley_u - bias)).clamp_(bias_min, bias_max)
        bias.copy_(torch.where(has_valley, moved, bias))
        self.scale.copy_(torch.where(self.peak > 0, self.peak, self.scale))
        self.histogram.zero_()
        self.peak.zero_()
        self.n_samples.zero_()
        self._count = 0
        return ValleyWindow(has_valley.float().mean(), has_valley, frequency)
