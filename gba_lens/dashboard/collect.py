"""One streaming pass over tokens that keeps, per SAE feature, what a dashboard page shows.

:class:`FeatureStats` is updated batch by batch with the feature activations ``[batch, pos,
d_sae]`` of that batch and keeps, for every feature:

- firing count, sum and max of the activation (frequency, mean when active, max);
- the top-k activating contexts (a window of tokens around the token and the feature's
  activation on each of them);
- a uniform sample of contexts per activation band (bands are equal slices of ``[0, range]``);
- a histogram of the positive activations over ``[0, range]``.

``range`` is a per-feature power of two at or above the largest activation seen so far. When a
larger activation arrives the range doubles (as often as needed) and adjacent histogram bins and
bands merge in pairs, so histogram counts stay exact and bins always cover the data. The band
samples are bottom-k sketches: every firing token gets a uniform random key and a band keeps the
``samples_per_band`` smallest keys, so merging two bands is keeping the smallest keys of both,
which is again a uniform sample of the merged band.

Memory is ``O(d_sae x (top_k + bands x samples_per_band) x window)`` whatever the number of
tokens; every update is vectorised over the batch (no Python loop over tokens or features).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int

__all__ = ["FeatureStats"]

_NO_RANGE = -1000  # exponent of a feature that has not fired yet (range 2**-1000 = 0)


@dataclass
class _Window:
    """Offsets of a context window around the firing token."""

    left: int
    right: int

    @property
    def width(self) -> int:
        return self.left + 1 + self.right


class FeatureStats:
    """Per-feature statistics of one pass (see the module docstring).

    Args:
        d_sae: number of features.
        top_k: contexts kept per feature, largest activation first.
        n_bands: activation bands (a power of two) for the band samples.
        samples_per_band: contexts sampled per band.
        n_bins: histogram bins (a power of two, >= n_bands).
        context_left / context_right: tokens kept before / after the firing token.
        seed: seed of the sampling keys.
        device: where the state lives (the activations' device).
    """

    def __init__(
        self,
        d_sae: int,
        top_k: int = 16,
        n_bands: int = 8,
        samples_per_band: int = 3,
        n_bins: int = 64,
        context_left: int = 12,
        context_right: int = 4,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        for name, value in (("n_bands", n_bands), ("n_bins", n_bins)):
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, got {value}")
        if n_bins < n_bands:
            raise ValueError(f"n_bins ({n_bins}) must be >= n_bands ({n_bands})")
        if top_k < 1 or samples_per_band < 0 or context_left < 0 or context_right < 0:
            raise ValueError("top_k must be >= 1; samples_per_band and context sizes >= 0")
        self.d_sae, self.top_k, self.n_bands, self.n_samples = d_sae, top_k, n_bands, samples_per_band
        self.n_bins = n_bins
        self.window = _Window(context_left, context_right)
        self.device = torch.device(device)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)
        d, w, f32 = self.device, self.window.width, torch.float32
        self.n_tokens = 0  # positions counted (excluded tokens are not)
        self.n_rows = 0  # rows seen, for the row ids of contexts
        self.fire_count = torch.zeros(d_sae, dtype=torch.int64, device=d)
        self.act_sum = torch.zeros(d_sae, dtype=torch.float64, device=d)
        self.act_max = torch.zeros(d_sae, dtype=f32, device=d)
        self.exponent = torch.full((d_sae,), _NO_RANGE, dtype=torch.int64, device=d)
        self.hist = torch.zeros(d_sae, n_bins, dtype=torch.int64, device=d)
        # top-k: value, (row, pos) of the token, window tokens and window activations
        self.top_value = torch.full((d_sae, top_k), -math.inf, dtype=f32, device=d)
        self.top_where = torch.full((d_sae, top_k, 2), -1, dtype=torch.int64, device=d)
        self.top_tokens = torch.full((d_sae, top_k, w), -1, dtype=torch.int32, device=d)
        self.top_acts = torch.zeros(d_sae, top_k, w, dtype=torch.float16, device=d)
        self._mask: torch.Tensor | None = None  # the current batch's mask, during update()
        # band samples, one row per (feature, band): key (inf = empty), value, where, window
        g, s = d_sae * n_bands, samples_per_band
        self.band_key = torch.full((g, s), math.inf, dtype=f32, device=d)
        self.band_value = torch.zeros(g, s, dtype=f32, device=d)
        self.band_where = torch.full((g, s, 2), -1, dtype=torch.int64, device=d)
        self.band_tokens = torch.full((g, s, w), -1, dtype=torch.int32, device=d)
        self.band_acts = torch.zeros(g, s, w, dtype=torch.float16, device=d)

    # ------------------------------------------------------------------------------ state
    def state_bytes(self) -> int:
        """Bytes held by the state tensors (independent of the number of tokens seen)."""
        return sum(t.numel() * t.element_size() for t in vars(self).values() if isinstance(t, torch.Tensor))

    @property
    def frequency(self) -> Float[torch.Tensor, " d_sae"]:
        return self.fire_count.double() / max(self.n_tokens, 1)

    @property
    def mean_active(self) -> Float[torch.Tensor, " d_sae"]:
        """Mean activation over the tokens where the feature fires (0 if it never does)."""
        return (self.act_sum / self.fire_count.clamp(min=1)).float()

    @property
    def range(self) -> Float[torch.Tensor, " d_sae"]:
        """Upper end of each feature's histogram / band range (0 before it fires)."""
        return torch.pow(2.0, self.exponent.double()).float()

    # ------------------------------------------------------------------------------ update
    @torch.no_grad()
    def update(
        self,
        acts: Float[torch.Tensor, "batch pos d_sae"],
        tokens: Int[torch.Tensor, "batch pos"],
        mask: Bool[torch.Tensor, "batch pos"] | None = None,
    ) -> None:
        """Add one batch. ``mask`` (True = count) drops positions such as BOS tokens."""
        if acts.ndim != 3 or acts.shape[-1] != self.d_sae or acts.shape[:2] != tokens.shape:
            raise ValueError(
                f"expected activations [batch, pos, {self.d_sae}] matching tokens {list(tokens.shape)}, "
                f"got {list(acts.shape)}"
            )
        acts = acts.detach().to(self.device, torch.float32).contiguous()
        tokens = tokens.to(self.device).contiguous()
        batch, n_pos, _ = acts.shape
        flat = acts.reshape(batch * n_pos, self.d_sae)
        # The only pass over the whole [tokens, d_sae] matrix is one nonzero, straight on the
        # floats (no [tokens, d_sae] bool temporary), giving flat indices for 1-D gathers; entries
        # that are nonzero but not positive (or NaN) are dropped afterwards. Everything else works
        # on the firing entries, O(L0 x tokens).
        fired = flat.view(-1).nonzero().squeeze(1)
        values = flat.view(-1).take(fired)
        keep = values > 0
        if mask is not None:
            mask = mask.to(self.device).contiguous()
            keep &= mask.view(-1).take(fired // self.d_sae)
            self.n_tokens += int(mask.sum())
        else:
            self.n_tokens += batch * n_pos
        if not bool(keep.all()):
            fired, values = fired[keep], values[keep]
        where = torch.stack([fired // self.d_sae, fired % self.d_sae], dim=1)  # (flat token, feature)
        feats = where[:, 1]
        self.fire_count += torch.bincount(feats, minlength=self.d_sae)
        self.act_sum += torch.bincount(feats, weights=values.double(), minlength=self.d_sae)
        batch_max = torch.zeros(self.d_sae, device=self.device).scatter_reduce_(0, feats, values, "amax")
        self.act_max = torch.maximum(self.act_max, batch_max)
        self._grow_ranges(batch_max)
        self._update_hist(feats, values)
        self._mask = mask
        self._update_top(where, values, acts, tokens)
        if self.n_samples:
            self._update_bands(where, values, acts, tokens)
        self._mask = None
        self.n_rows += batch

    def _grow_ranges(self, batch_max: torch.Tensor) -> None:
        """Raise each feature's range to a power of two >= its max; merge bins and bands."""
        need = torch.where(
            batch_max > 0, torch.ceil(torch.log2(batch_max.clamp(min=1e-30))).long(), _NO_RANGE
        )
        new = torch.maximum(self.exponent, need)
        shift = new - self.exponent
        for step in shift[shift > 0].unique().tolist():
            rows = (shift == step).nonzero().flatten()
            self.hist[rows] = _merge_pairs(self.hist[rows], step, dim=1)
            self._merge_bands(rows, step)
        self.exponent = new

    def _merge_bands(self, features: torch.Tensor, step: int) -> None:
        if not self.n_samples:
            return
        q, s = self.n_bands, self.n_samples
        factor = 1 << min(step, int(math.log2(q)))
        rows = (features[:, None] * q + torch.arange(q, device=self.device)).flatten()
        n = len(features)
        key = self.band_key[rows].reshape(n, q // factor, factor * s)
        key, pick = key.topk(s, dim=-1, largest=False)  # the s smallest keys of the merged band
        out = torch.full((n, q, s), math.inf, device=self.device)
        out[:, : q // factor] = key
        self.band_key[rows] = out.reshape(n * q, s)
        for name in ("band_value", "band_where", "band_tokens", "band_acts"):
            t = getattr(self, name)
            merged = t[rows].reshape(n, q // factor, factor * s, *t.shape[2:])
            idx = pick.reshape(*pick.shape, *([1] * (t.ndim - 2))).expand(*pick.shape, *t.shape[2:])
            kept = merged.gather(2, idx)
            fill = -1 if name in ("band_where", "band_tokens") else 0
            full = torch.full((n, q, s, *t.shape[2:]), fill, dtype=t.dtype, device=self.device)
            full[:, : q // factor] = kept
            t[rows] = full.reshape(n * q, s, *t.shape[2:])

    def _bucket(self, features: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
        """Index in [0, n) of each value in its feature's ``[0, range]`` cut into n slices."""
        scale = torch.pow(2.0, -self.exponent[features].float()) * n
        return (values * scale).long().clamp_(0, n - 1)

    def _update_hist(self, features: torch.Tensor, values: torch.Tensor) -> None:
        bins = self._bucket(features, values, self.n_bins)
        counts = torch.bincount(features * self.n_bins + bins, minlength=self.d_sae * self.n_bins)
        self.hist += counts.view(self.d_sae, self.n_bins)

    def _windows(
        self, acts: torch.Tensor, tokens: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Window tokens ``[n, w]`` (-1 outside the row) and the feature's activations there."""
        n_pos, d_sae = tokens.shape[1], acts.shape[-1]
        offsets = torch.arange(-self.window.left, self.window.right + 1, device=self.device)
        at = pos[:, None] + offsets
        inside = (at >= 0) & (at < n_pos)
        # flat indices and take(): far cheaper than multi-tensor advanced indexing of [b, p, d_sae]
        flat_at = rows[:, None] * n_pos + at.clamp_(0, n_pos - 1)
        win_tokens = torch.where(inside, tokens.take(flat_at), -1).to(torch.int32)
        win_acts = torch.where(inside, acts.take(flat_at * d_sae + feats[:, None]), 0.0)
        if self._mask is not None:
            win_acts = win_acts * self._mask.take(flat_at)
        return win_tokens, win_acts.half()

    def _update_top(self, where: torch.Tensor, values: torch.Tensor, acts: torch.Tensor, tokens: torch.Tensor) -> None:
        # candidates: firing entries above their feature's current k-th value
        feats = where[:, 1]
        cand = (values > self.top_value[feats, -1]).nonzero().flatten()
        if len(cand) == 0:
            return
        # key in [0, 1): 1 - value / range (range >= value), so larger values sort first
        scaled = values[cand].double() * torch.pow(2.0, -self.exponent[feats[cand]].double())
        order, group, rank = _rank_within(feats[cand], (1.0 - scaled).clamp(0.0, 1.0 - 1e-12), self.top_k)
        pick = cand[order]
        self._merge(
            "top", group, rank, self.top_k, largest=True,
            new={"value": values[pick]}, where=where[pick], acts=acts, tokens=tokens,
        )

    def _merge(
        self, prefix: str, group: torch.Tensor, rank: torch.Tensor, size: int, largest: bool,
        new: dict[str, torch.Tensor], where: torch.Tensor, acts: torch.Tensor, tokens: torch.Tensor,
    ) -> None:
        """Merge candidates (``group`` = state row, ``rank`` < size within it) into the state
        tensors ``{prefix}_*``, keeping per row the ``size`` best by ``{prefix}_value`` (largest)
        or ``{prefix}_key`` (smallest)."""
        groups, slot = torch.unique(group, return_inverse=True)
        g = len(groups)
        score_name = "value" if largest else "key"
        score = getattr(self, f"{prefix}_{score_name}")
        empty = -math.inf if largest else math.inf
        new_score = torch.full((g, size), empty, device=self.device)
        new_score[slot, rank] = new[score_name]
        both = torch.cat([score[groups], new_score], dim=1)
        best, pick = both.topk(size, dim=1, largest=largest)
        score[groups] = best
        # windows only for the candidates that made it into the state (often a small fraction)
        cand_at = torch.full((g, size), -1, dtype=torch.long, device=self.device)
        cand_at[slot, rank] = torch.arange(len(slot), device=self.device)
        cand = cand_at.gather(1, (pick - size).clamp(min=0))
        # a newcomer: picked from the candidates and not one of their empty slots (those are
        # only picked when fewer than ``size`` entries exist; the old side is empty there too)
        in_g, in_j = ((pick >= size) & (cand >= 0)).nonzero(as_tuple=True)
        won = cand[in_g, in_j]
        where = where[won]
        n_pos = tokens.shape[1]
        rows, pos = where[:, 0] // n_pos, where[:, 0] % n_pos
        win_tokens, win_acts = self._windows(acts, tokens, rows, pos, where[:, 1])
        fresh = {
            **{name: value[won] for name, value in new.items()},
            "where": torch.stack([rows + self.n_rows, pos], dim=-1),
            "tokens": win_tokens,
            "acts": win_acts,
        }
        keep_old = pick.clamp(max=size - 1)  # slots taken by a newcomer are overwritten below
        for name, value in fresh.items():
            if name == score_name:
                continue
            state = getattr(self, f"{prefix}_{name}")
            idx = keep_old.reshape(g, size, *([1] * (state.ndim - 2))).expand(g, size, *state.shape[2:])
            out = state[groups].gather(1, idx)
            out[in_g, in_j] = value.to(state.dtype)
            state[groups] = out

    def _update_bands(
        self, where: torch.Tensor, values: torch.Tensor, acts: torch.Tensor, tokens: torch.Tensor
    ) -> None:
        if len(values) == 0:
            return
        feats = where[:, 1]
        group = feats * self.n_bands + self._bucket(feats, values, self.n_bands)
        key = torch.rand(len(values), generator=self._gen, device=self.device)
        # only candidates that beat the worst key their band keeps (once bands fill up, few do)
        cand = (key < self.band_key[group, -1]).nonzero().flatten()
        if len(cand) == 0:
            return
        order, group, rank = _rank_within(group[cand], key[cand], self.n_samples)
        pick = cand[order]
        self._merge(
            "band", group, rank, self.n_samples, largest=False,
            new={"key": key[pick], "value": values[pick]}, where=where[pick], acts=acts, tokens=tokens,
        )


def _rank_within(group: torch.Tensor, key: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort entries by (group, key) and keep the first ``limit`` of each group: returns
    (indices into the input, their group, their rank in the group). ``key`` must lie in [0, 1),
    so one sort of ``group + key`` (float64: exact for the group, ~1e-10 for the key) does it."""
    order = torch.sort(group.double() + key.double()).indices
    group = group[order]
    rank = torch.arange(len(group), device=group.device) - torch.searchsorted(group, group)
    keep = rank < limit
    return order[keep], group[keep], rank[keep]


def _merge_pairs(counts: torch.Tensor, step: int, dim: int) -> torch.Tensor:
    """Sum adjacent bins ``2**step`` at a time along the last axis; zero-fill to the old width."""
    n = counts.shape[dim]
    factor = 1 << min(step, int(math.log2(n)))
    merged = counts.reshape(*counts.shape[:dim], n // factor, factor).sum(-1)
    out = torch.zeros_like(counts)
    out[..., : n // factor] = merged
    return out
