"""The L0 from the data (``find_l0``): latents that fire together should be no more aligned than any two.

In data made of features that each have their own direction, which features occur together has
nothing to do with where they point: the mean |cosine| between the directions of two features
active on the same input is the mean |cosine| of any two (the ratio is 1.00 on every synthetic
model of docs/experiments/prior_free.md, hierarchical and correlated ones included). An SAE is
measured the same way on its decoder rows:

    ratio = mean |cos(d_m, d_n)| over latents m != n active on the same input
            / mean |cos(d_m, d_n)| over two live latents

An SAE that fires too little learns mixtures, and the mixtures that share a feature fire together:
ratio > 1. One that fires too much spends its extra firings on latents that complement the ones
already active, filling the input's other directions: ratio < 1. So ``find_l0`` scales GBA's
geometric targets (with the third branch of a requested L0, :mod:`gba_lens.saes.l0_control`) by an
integral controller on the ratio: every ``CHECK_EVERY`` steps, log s <- log s + GAIN (ratio - 1).
The ratio is read twice, off the batch (the check) and off the SAE's own code (its activations
moved to other rows, decoded and encoded again; only after a check over 1), and the scale follows
the check, or the own code where the check exceeds it by more than ``GATE`` (latents the data's
features push over their thresholds lift the check alone); ``MINMOD`` combines the two otherwise,
``GATE=0`` reads the check alone.

Pairs whose directions are aligned beyond ``MAX_PAIR_COSINE`` are left out of both means: they are
near-copies of one feature, which an SAE with latents to spare fires together at the right L0, not
mixtures (with them, a small model with more latents than features was held at three times its
true L0; without, at about twice: the rest is the thresholds' selection, which favours inputs whose
features lean toward each other).

Measured on each check's batch (at most ``MAX_ROWS`` rows of each rank's batch): every ordered pair
of the first ``MAX_ACTIVE`` active latents (by index) of each row gives two sums (|cos| and pairs)
that data-parallel ranks all-reduce, so that they see what one process sees; the denominator is the
mean |cos| over every pair of ``BASELINE_LATENTS`` random live latents, drawn by a generator seeded
with the step, so that every rank (and a resumed run) draws the same ones. Cost per check: about
(MAX_ROWS x MAX_ACTIVE^2 + BASELINE_LATENTS^2) x d_in multiply-adds, every CHECK_EVERY steps;
``MINMOD`` and ``GATE`` add the own code's reading (a decode and an encode of the rows read), ``GATE``
also its gap's pairs, and reads them only after a check over 1 (``OWN_CODE_AFTER``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import nn

CHECK_EVERY = 10
"""Optimiser steps between two measurements (and moves of the target scale)."""
GAIN = 0.6
"""Integral gain: log s moves by GAIN (ratio - 1) per check."""
MAX_ROWS = 512
"""Rows of the batch a check reads (of each rank's batch). 1024 gives the same figures within the seeds'
spread, the LM's over six seeds, at about twice the check's cost (docs/experiments/prior_free.md,
twenty-sixth step)."""
OWN_CODE_ROWS = 1024
"""Rows of the check's batch (of the first ``MAX_ROWS``; by default all of them) whose own code a second
reading re-encodes."""
MAX_ACTIVE = 8
"""Active latents of a row a check reads (the first by index: their order says nothing of their directions)."""
BASELINE_LATENTS = 256
"""Random live latents whose pairs give the denominator (32,640 pairs; 512 gave the same figures at four
times the denominator's cost: docs/experiments/prior_free.md, twenty-sixth step)."""
MIN_MARGIN = 0.0
"""A latent enters the pairs only where its pre-activation clears its threshold by this fraction of
the threshold (u > (1 + MIN_MARGIN) t, t = -b): one that only just fires is often pushed there by
another active direction leaning its way (interference), not a mixture (0: every active latent)."""
OWN_CODE = 0
"""1: the pairs are read off the SAE's own code with each latent's activations moved to other rows
(a random cyclic shift per latent, which breaks which latents fire together and keeps how often and
how strongly each fires), decoded and encoded again: data made of the SAE's latents as independent
features, where mixtures still fire together (they share directions) and the data's own features
do not push latents over their thresholds. 2: the same with each row's reconstruction error, taken
from another row, added before encoding (what the SAE does not fire on stays in its input).
3: the code not shifted, decoded with another row's error and encoded again (which latents fire
together is kept: twenty-second step). 0: the batch's own code (docs/experiments/prior_free.md,
twentieth step)."""
MINMOD = 0
"""1: two readings of each check, the batch's own pairs (the check) and the own code with another
row's error (``OWN_CODE=2``'s reading; ``OWN_CODE``'s where it is set, else ``MIN_MARGIN``'s where it is
set: the check itself is then read with neither), and the scale moves by the one closer to 1 when both are on
the same side of 1 and holds when they disagree (minmod). The check is pushed up by latents that
fire without their features where interference is large; the own code is pushed down where which
features occur together carries structure it breaks; where the two disagree the L0 lies between
their levels (docs/experiments/prior_free.md, twenty-first step). 0: one reading, as ``OWN_CODE`` says."""
GATE = 0.07
"""Two readings of each check, the batch's own pairs (the check) and the SAE's own code (as with
``MINMOD``), combined: the scale follows the check, and the second reading where the check exceeds it
by more than GATE, both read for this over every pair of a row's active latents (``GATE_ACTIVE``).
Latents pushed over their thresholds by the data's features (interference, large where the input has
few dimensions) lift the check and not the SAE's own code; features that occur together lift both
alike (during training the gap is 0.10 ... 0.22 on a small model with more latents than features, at
most 0.05 on the Zipf models, the hierarchical synthbench model and the paper toy; 0.07 keeps their
figures and brings the small model's L0 from about twice its truth to +13%: docs/experiments/prior_free.md,
twenty-third and twenty-fourth steps). 0: the check alone (the eighteenth to twenty-second steps'
``find_l0``), at about a sixth of the cost. Set it to 0 to use ``MINMOD``."""
OWN_CODE_AFTER = 1.0
"""With ``GATE``, a check reads the SAE's own code only where the last check's batch reading was over
this (0: every check). The gate only ever lowers a reading, for latents that interference lifts over
their thresholds, which holds the check over 1; after a check at or under 1 the scale is not being
raised, and the check alone moves it. The last check's reading is the all-reduced one, so every rank
skips alike, and checkpoints carry it. Measured: the same figures on every synthetic model and the
LM, and a new SAE's checks at 0.4 ... 0.6 times the cost (docs/experiments/prior_free.md, twenty-fifth step)."""
GATE_ACTIVE = 0
"""0: the gate's gap reads every pair of a row's active latents, estimated from ``MAX_ACTIVE`` of them
drawn at random (each row's pairs weighted by k (k - 1) / (m (m - 1)), k active, m drawn: unbiased,
at the cost of the check). n > 0: the first n by index. The scale's readings read the first
``MAX_ACTIVE``, which count a row that fires many latents for less: on synthbench that doubles the gap."""
SPARSE_BELOW = 0.01
"""The own code is decoded as a sparse matrix where under this share of its entries are active (cost
only: at 1024 x 4096 with 15 active per row a sparse product takes a fifth of the dense one's time; at
1024 x 512 with 30 per row, 2.6 times as long)."""
MAX_PAIR_COSINE = 0.5
"""Pairs of latents whose decoder rows have a larger |cos| are left out of both means (near-copies).
Measured on latents told the L0 (docs/experiments/prior_free.md, nineteenth step): with every pair
the ratio crosses 1 at 1.45 ... 1.9 times the true L0 of three Zipfian models and a small model with
more latents than features, at 1.0 ... 1.6 times with this cut (0.3 and 0.7 were further off)."""


def _row_positions(row: Int[torch.Tensor, " nnz"], n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries per row, and each row-major entry's position within its row."""
    counts = torch.bincount(row, minlength=n_rows)
    return counts, torch.arange(row.numel(), device=row.device) - (torch.cumsum(counts, 0) - counts)[row]


def unit_rows(rows: Float[torch.Tensor, "n d_in"]) -> Float[torch.Tensor, "n d_in"]:
    """Each row over its norm (float32 at least; a row of norm under 1e-8 over 1e-8)."""
    rows = rows.float()
    return rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def active_entries(
    feature_acts: Float[torch.Tensor, "... d_sae"], max_rows: int, max_active: int | None = None
) -> tuple[Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"], int]:
    """(row, latent) of the first ``max_active`` (None: ``MAX_ACTIVE``) active entries (by latent
    index) of each of the first ``max_rows`` rows of dense or sparse (COO) activations, row-major, and
    the number of rows read."""
    if feature_acts.is_sparse:
        indices = feature_acts.coalesce().indices()
        n_rows = min(int(feature_acts.shape[0]), max_rows)
        read = indices[0] < n_rows
        row, latent = indices[0][read], indices[1][read]
    else:
        flat = feature_acts.detach().reshape(-1, feature_acts.shape[-1])[:max_rows]
        n_rows = flat.shape[0]
        row, latent = flat.nonzero(as_tuple=True)  # not (flat != 0): a slow copy of a boolean code
    limit = MAX_ACTIVE if max_active is None else max_active
    if limit >= feature_acts.shape[-1]:  # a row has no more active latents than that: every entry
        return row, latent, n_rows
    keep = _row_positions(row, n_rows)[1] < limit
    return row[keep], latent[keep], n_rows


def active_slots(
    row: Int[torch.Tensor, " nnz"], latent: Int[torch.Tensor, " nnz"], n_rows: int, max_active: int | None = None,
) -> Int[torch.Tensor, "rows width"]:
    """Each row's active latents (row-major entries), the first ``max_active`` (None: all), padded
    with -1 to the longest row's count."""
    counts, position = _row_positions(row, n_rows)
    width = int(counts.max()) if counts.numel() else 0
    width = width if max_active is None else min(width, max_active)
    keep = position < width
    slots = torch.full((n_rows, width), -1, dtype=torch.long, device=row.device)
    slots[row[keep], position[keep]] = latent[keep]
    return slots


def coactive_alignment(
    row: Int[torch.Tensor, " nnz"], latent: Int[torch.Tensor, " nnz"], n_rows: int,
    directions: Float[torch.Tensor, "d_sae d_in"], max_active: int | None = None, max_cosine: float | None = None,
    row_weights: Float[torch.Tensor, " rows"] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of |cos| over the ordered pairs of distinct latents active in the same row (the first
    ``max_active`` of each; None: ``MAX_ACTIVE``) whose |cos| is at most ``max_cosine`` (None:
    ``MAX_PAIR_COSINE``), and the number of those pairs (0-dim float tensors), each row's weighted by
    ``row_weights`` where given. ``directions``: decoder rows (see :func:`unit_rows`); entries row-major."""
    slots = active_slots(row, latent, n_rows, MAX_ACTIVE if max_active is None else max_active)
    return slot_alignment(slots, directions, max_cosine, row_weights)


def slot_alignment(
    slots: Int[torch.Tensor, "rows width"], directions: Float[torch.Tensor, "d_sae d_in"],
    max_cosine: float | None = None, row_weights: Float[torch.Tensor, " rows"] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`coactive_alignment` over the latents in each row's slots (-1: empty)."""
    width = slots.shape[1]
    if width < 2:
        zero = directions.new_zeros(())
        return zero, zero.clone()
    filled = slots >= 0
    # [rows, width, d_in]; empty slots hold latent 0's row, which ``pairs`` leaves out. index_select,
    # not directions[slots]: advanced indexing with a 2-D index is several times slower on the CPU.
    vectors = unit_rows(directions.index_select(0, slots.clamp(min=0).view(-1))).view(*slots.shape, -1)
    cosines = torch.bmm(vectors, vectors.transpose(1, 2)).abs_()
    pairs = filled[:, :, None] & filled[:, None, :] & ~torch.eye(width, dtype=torch.bool, device=slots.device)
    pairs &= cosines <= _cut(max_cosine)
    if row_weights is None:
        return (cosines * pairs).sum(), pairs.sum().to(directions.dtype)
    return (row_weights @ (cosines * pairs).sum((1, 2)), row_weights @ pairs.sum((1, 2)).to(directions.dtype))


def sampled_pair_alignment(
    row: Int[torch.Tensor, " nnz"], latent: Int[torch.Tensor, " nnz"], n_rows: int,
    directions: Float[torch.Tensor, "d_sae d_in"], generator: torch.Generator, drawn: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`coactive_alignment` over every pair of each row's active latents (entries row-major),
    estimated from ``drawn`` (None: ``MAX_ACTIVE``) of them drawn at random per row, each row's pairs
    weighted by k (k - 1) / (m (m - 1)) (k active, m drawn): unbiased, at the cost of ``drawn``."""
    drawn = MAX_ACTIVE if drawn is None else drawn
    key = torch.rand(row.numel(), generator=generator, device=generator.device).to(row.device)
    active, position = _row_positions(row, n_rows)
    width = int(active.max()) if active.numel() else 0
    # Each row's entries in slots with a random key each, empty slots keyed 2 (after every draw in
    # [0, 1)); the row's ``drawn`` smallest keys, in their order, are its draw.
    index = row * width + position
    keys = torch.full((n_rows * width,), 2.0, device=row.device).index_copy_(0, index, key).view(n_rows, width)
    latents = torch.full((n_rows * width,), -1, dtype=latent.dtype, device=row.device).index_copy_(0, index, latent)
    chosen = keys.topk(min(drawn, width), dim=1, largest=False).indices
    slots = latents.view(n_rows, width).gather(1, chosen)
    active = active.to(torch.float64)
    kept = active.clamp(max=drawn)
    weights = (active * (active - 1) / (kept * (kept - 1)).clamp(min=1)).to(directions.dtype)
    return slot_alignment(slots, directions, row_weights=weights)


def shifted_code(
    feature_acts: Float[torch.Tensor, "... d_sae"], max_rows: int, generator: torch.Generator,
    sparse: bool | None = False,
) -> Float[torch.Tensor, "rows d_sae"]:
    """The first ``max_rows`` rows of dense or sparse (COO) activations, each latent's column shifted
    cyclically by its own random number of rows: ``out[i, j] = acts[(i + offset_j) % rows, j]``.
    Built from the active entries (a code is sparse; a gather over every entry costs more than the
    decoding that follows). Dense, or sparse (COO) with ``sparse``; None: sparse where under
    ``SPARSE_BELOW`` of the entries are active (where a sparse product decodes it faster)."""
    if feature_acts.is_sparse:
        acts = feature_acts.coalesce()
        indices, values = acts.indices(), acts.values()
        n_rows, d_sae = min(int(acts.shape[0]), max_rows), int(acts.shape[-1])
        read = indices[0] < n_rows
        row, latent, values = indices[0][read], indices[1][read], values[read]
    else:
        flat = feature_acts.detach().reshape(-1, feature_acts.shape[-1])[:max_rows]
        n_rows, d_sae = flat.shape
        row, latent = flat.nonzero(as_tuple=True)
        values = flat[row, latent]
    offsets = torch.randint(0, max(n_rows, 1), (d_sae,), generator=generator, device=generator.device).to(values.device)
    moved = (row - offsets[latent]) % max(n_rows, 1)
    if sparse is None:
        sparse = values.numel() < SPARSE_BELOW * n_rows * d_sae
    if sparse:
        return torch.sparse_coo_tensor(torch.stack([moved, latent]), values, (n_rows, d_sae),
                                       check_invariants=False).coalesce()
    shifted = torch.zeros(n_rows, d_sae, dtype=values.dtype, device=values.device)
    shifted[moved, latent] = values
    return shifted


def random_pair_alignment(
    directions: Float[torch.Tensor, "n d_in"], generator: torch.Generator, n_latents: int | None = None,
    max_cosine: float | None = None, among: Int[torch.Tensor, " m"] | None = None,
) -> torch.Tensor:
    """Mean |cos| over the pairs of distinct rows of ``n_latents`` (None: ``BASELINE_LATENTS``) random
    rows of ``directions`` (of the rows ``among`` lists; None: every row) whose |cos| is at most
    ``max_cosine`` (None: ``MAX_PAIR_COSINE``). The module's constants are read at the call (a study
    may set them)."""
    pick = torch.randperm(directions.shape[0] if among is None else among.numel(), generator=generator,
                          device=generator.device)
    pick = pick[:BASELINE_LATENTS if n_latents is None else n_latents].to(directions.device)
    sample = unit_rows(directions.index_select(0, pick if among is None else among[pick]))
    cosines = (sample @ sample.T).abs()
    kept = cosines <= _cut(max_cosine)
    kept.fill_diagonal_(False)
    return (cosines * kept).sum() / kept.sum().clamp(min=1)


class CoactivationBalance(nn.Module):
    """One check's sums and denominator (not saved: a check starts and ends within one step), and the
    last check's batch reading (``last_check``, saved: it decides whether the next check reads the own
    code, ``OWN_CODE_AFTER``). The target scale a check moves lives in
    :class:`~gba_lens.saes.l0_control.L0Control`, which checkpoints carry."""

    sums: torch.Tensor
    own_sums: torch.Tensor
    gap_sums: torch.Tensor
    last_check: torch.Tensor

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__()
        self.register_buffer("sums", torch.zeros(2, device=device), persistent=False)
        self.register_buffer("own_sums", torch.zeros(2, device=device), persistent=False)  # MINMOD's, GATE's second reading
        # GATE: the check's and the second reading's sums over every pair of a row (GATE_ACTIVE)
        self.register_buffer("gap_sums", torch.zeros(4, device=device), persistent=False)
        self.register_buffer("last_check", torch.full((), -1.0, device=device))  # -1: no check yet (a ratio is >= 0)
        self.baseline: torch.Tensor | None = None  # None: fewer than two live latents
        self.last_ratio: float | None = None
        self.last_readings: tuple[float, ...] = ()  # the last check's readings (two where it read the second)
        self.last_gap: float | None = None  # GATE: the last check's gap between them (None: not read)
        self._second = False  # whether this check reads the second reading

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "last_check"
        if key not in state_dict:  # a checkpoint from before OWN_CODE_AFTER: as if no check had run
            warnings.warn("this checkpoint's find_l0 predates the saved last check: the resumed run's "
                          "next check reads the own code", stacklevel=2)
            state_dict[key] = torch.full_like(self.last_check, -1.0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reads_second(self) -> bool:
        """Whether the next check reads the second reading (``MINMOD``, or ``GATE`` after a check over
        ``OWN_CODE_AFTER``)."""
        if not _two_readings():
            return False
        if MINMOD:
            return True
        last = float(self.last_check)  # a check waits on the device anyway, for its ratio
        return last < 0 or last > OWN_CODE_AFTER  # < 0: no check yet

    @staticmethod
    def due(step: int) -> bool:
        return step > 0 and step % CHECK_EVERY == 0

    @torch.no_grad()
    def observe(
        self, feature_acts: Float[torch.Tensor, "... d_sae"], decoder: Float[torch.Tensor, "d_sae d_in"],
        live: Bool[torch.Tensor, " d_sae"], step: int,
        hidden_pre: Float[torch.Tensor, "... d_sae"] | None = None, bias: Float[torch.Tensor, " d_sae"] | None = None,
        reencode: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
        sae_in: Float[torch.Tensor, "... d_in"] | None = None, sae_out: Float[torch.Tensor, "... d_in"] | None = None,
    ) -> None:
        """This batch's sums over co-active pairs (of this rank's rows) and the denominator over the
        live latents (the same on every rank: ``live`` is the global batch's). With ``MIN_MARGIN``,
        the pairs are read off ``hidden_pre`` (y = u + b) and ``bias`` b instead of ``feature_acts``; with
        ``OWN_CODE``, off ``reencode`` (inputs in the SAE's units -> y) of the shifted code's
        reconstruction (plus, with 2, the error ``sae_in - sae_out`` of the rows read, shifted by a
        random number of rows). With ``MINMOD`` or ``GATE``, both the batch's pairs (``sums``) and the
        second reading's (``own_sums``; see ``MINMOD``); with ``GATE`` also both over every pair of
        each row's active latents (``gap_sums``; see ``GATE_ACTIVE``)."""
        directions = decoder.detach()  # normalised where read (unit_rows): no pass over the whole decoder
        self._second = self.reads_second()
        if self._second:  # the check, and OWN_CODE's reading, else MIN_MARGIN's, else OWN_CODE=2's
            readings = ((self.sums, 0, 0.0), (self.own_sums, OWN_CODE or (0 if MIN_MARGIN > 0 else 2), MIN_MARGIN))
        elif _two_readings():  # GATE after a check at or under OWN_CODE_AFTER: the check alone
            readings = ((self.sums, 0, 0.0),)
        else:
            readings = ((self.sums, OWN_CODE, MIN_MARGIN),)
        for i, (sums, own_code, margin) in enumerate(readings):
            found = self._pair_sums(own_code, margin, feature_acts, directions, step, hidden_pre, bias, reencode,
                                    sae_in, sae_out, gap=self._second and GATE > 0)
            sums.copy_(torch.stack(found[:2]))
            if len(found) == 4:
                self.gap_sums[2 * i:2 * i + 2].copy_(torch.stack(found[2:]))
        live_latents = live.nonzero().squeeze(1)  # the draw reads only its rows, not a copy of every live one
        self.baseline = (random_pair_alignment(directions, _generator(directions.device, step), among=live_latents)
                         if live_latents.numel() >= 2 else None)

    @staticmethod
    def _pair_sums(
        own_code: int, margin: float, feature_acts: torch.Tensor, directions: torch.Tensor, step: int, hidden_pre: torch.Tensor | None,
        bias: torch.Tensor | None, reencode: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None,
        sae_in: torch.Tensor | None, sae_out: torch.Tensor | None, gap: bool,
    ) -> tuple[torch.Tensor, ...]:
        """One reading's two sums over each row's first ``MAX_ACTIVE`` active latents, and with
        ``gap`` two more over its pairs as ``GATE_ACTIVE`` says (see :meth:`observe`)."""
        if own_code and reencode is not None:
            generator = _generator(directions.device, step + 1)
            rows = min(MAX_ROWS, OWN_CODE_ROWS)
            if own_code == 3:  # not shifted: which latents fire together is kept
                dense = feature_acts.to_dense() if feature_acts.is_sparse else feature_acts
                code = dense.detach().reshape(-1, dense.shape[-1])[:rows]
            else:
                code = shifted_code(feature_acts, rows, generator, sparse=None)
            error = None
            if own_code >= 2 and sae_in is not None and sae_out is not None:
                n_rows, d_in = code.shape[0], sae_in.shape[-1]
                error = sae_in.reshape(-1, d_in)[:n_rows] - sae_out.detach().reshape(-1, d_in)[:n_rows]
                error = error.roll(int(torch.randint(1, max(2, n_rows), (), generator=generator, device=generator.device)), 0)
            hidden_pre = reencode(code, error)
        if (margin > 0 or own_code) and hidden_pre is not None and bias is not None:
            y = hidden_pre.detach().reshape(-1, hidden_pre.shape[-1])[:MAX_ROWS]
            feature_acts = y > margin * (-bias.detach()).clamp(min=0)  # u > (1 + margin) t
        if not gap:
            return coactive_alignment(*active_entries(feature_acts, MAX_ROWS), directions)
        entries = active_entries(feature_acts, MAX_ROWS, max(MAX_ACTIVE, GATE_ACTIVE) if GATE_ACTIVE else feature_acts.shape[-1])
        wide = (coactive_alignment(*entries, directions, max_active=GATE_ACTIVE) if GATE_ACTIVE
                else sampled_pair_alignment(*entries, directions, _generator(directions.device, step + 2)))
        return (*coactive_alignment(*entries, directions), *wide)

    def reduce_statistics(self, all_reduce: Callable[[torch.Tensor, str], None]) -> None:
        """Data-parallel training: the sums over every rank's rows."""
        all_reduce(self.sums, "sum")
        if self._second:
            all_reduce(self.own_sums, "sum")
            if GATE > 0:
                all_reduce(self.gap_sums, "sum")

    def ratio(self) -> float | None:
        """The check's ratio (None when the batch had no co-active pair or fewer than two live latents)."""
        readings = (self.sums, self.own_sums) if self._second else (self.sums,)
        if self.baseline is None or any(float(sums[1]) == 0 for sums in readings):
            return None
        baseline = self.baseline.clamp(min=1e-8)
        ratios = [float(total / count / baseline) for total, count in readings]
        self.last_readings = tuple(ratios)
        self.last_check.fill_(ratios[0])
        self.last_gap = None
        if len(ratios) == 1:
            self.last_ratio = ratios[0]
        elif MINMOD:
            self.last_ratio = 1.0 + minmod([r - 1.0 for r in ratios])
        else:
            wide = self.gap_sums.view(2, 2)
            if float(wide[:, 1].min()) == 0:
                return None
            check_wide, second_wide = (float(total / count / baseline) for total, count in wide)
            self.last_gap = check_wide - second_wide
            self.last_ratio = gate(*ratios, self.last_gap, GATE)
        return self.last_ratio


def minmod(offsets: list[float]) -> float:
    """The offset closest to 0 when all have the same sign, else 0."""
    if all(o > 0 for o in offsets) or all(o < 0 for o in offsets):
        return min(offsets, key=abs)
    return 0.0


def gate(check: float, second: float, gap: float, threshold: float) -> float:
    """The second reading where ``gap`` (the check minus the second, read over more of each row's
    latents) is over ``threshold``, else the check."""
    return second if gap > threshold else check


def _two_readings() -> bool:
    """Whether a check reads the second reading too (``MINMOD`` or ``GATE``; read now: a study sets them)."""
    if MINMOD and GATE > 0:
        raise ValueError("coactivation.MINMOD and coactivation.GATE combine the same two readings two ways: "
                         "set coactivation.GATE=0 to use MINMOD")
    return bool(MINMOD) or GATE > 0


def _cut(max_cosine: float | None) -> float:
    """The pairs' alignment cut: ``max_cosine``, or the module's MAX_PAIR_COSINE read now (a study may
    set it)."""
    return MAX_PAIR_COSINE if max_cosine is None else max_cosine


def _generator(device: torch.device, seed: int) -> torch.Generator:
    """The denominator's draws: seeded by the step, on the decoder's device (CPU for MPS)."""
    return torch.Generator(device=device if device.type in ("cpu", "cuda") else "cpu").manual_seed(seed)
