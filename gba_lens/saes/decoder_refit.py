"""The decoder and each latent's firing offset refitted by least squares on the trained code (``decoder_refit``).

A GBA SAE's codes keep moving until the end of its run: the bias rule, the valleys, ``find_l0``
and ``firing_worth`` move thresholds while the learning rate decays, and the encoder learns faster
late (``encoder_lr_scale``). The decoder, trained by Adam at that decaying rate, ends behind the
codes it decodes. Once training is over the codes are fixed, and the decoder that reconstructs
them best has a closed form. On rows x with codes Z (in the SAE's own units: the input scaled as
the encoder reads it, minus the pre-bias b_pre, which stays),

    W_dec = argmin_W |X - b_pre - Z W|^2 + lambda |W - W_trained|^2
          = (Z^T Z + lambda I)^-1 (Z^T (X - b_pre) + lambda W_trained)

with lambda = ``RIDGE`` times the mean of diag(Z^T Z): a latent that fires rarely in the rows keeps
most of its trained row, one that never fires keeps all of it.

The JumpReLU gate leaves one more number per latent free: what a firing latent outputs is u + c
(c = 0 as trained, or ``activation_bias``'s offset), and c moves no gate. With G the gates
(1 where a latent fires) and U the codes without offset, the codes are Z = U + G diag(c); for fixed
c the decoder is the solution above, so the offsets are fitted with the decoder following them:
Gauss-Newton steps on c alone (variable projection), whose d_sae x d_sae normal matrix, the gates' Gram
matrix less what the codes' span absorbs, times W W^T, comes from the sums below. At most
``OFFSET_STEPS`` steps, each halved until it lowers the error, end on the decoder of the last offsets.
An offset is kept at or above the latent's bias b, so that a firing latent's output u + c > 0 and the
SAE stays SAELens's JumpReLU. Alternating the two solves instead lowers the error too, but slowly (on
the stdlib LM thirty alternations reach what three steps reach).

Which latents fire is the rules' choice, not the reconstruction's: ``REALLOCATIONS`` times the
thresholds then move to where a firing's worth meets one price for every latent, the L0 held
(:mod:`gba_lens.saes.threshold_reallocation`), and the decoder and offsets are fitted again.

The statistics are sums (U^T U, U^T (X - b_pre), G^T G, G^T U, G^T (X - b_pre), |X - b_pre|^2, each
latent's firings), which data-parallel ranks all-reduce, so every rank solves the same system. Where the
rows give the latents few firings, a refit is taken only if it reconstructs rows it did not read better
than the trained SAE (:mod:`gba_lens.saes.refit_check`). The rows are the run's last ones
(gba_lens's trainers keep them: ``rows_to_keep``), so the refit reads no sample the run did not train on.

Measured (docs/experiments/prior_free.md, forty-second and forty-third steps): on the stdlib LM's
preset (six seeds) the decoder alone raises explained variance by 0.0016-0.0023 on both hooks, CE loss
recovered by 0.0002-0.0003 on resid_pre and by 0.0023 on mlp_out on average (-0.0008 on one seed);
BatchTopK's decoder, refitted the same way, gains a quarter to a half as much EV. The offsets add
about 0.001 of EV on resid_pre (their median is negative there: firings near the threshold output
less). Holding the encoder and the thresholds still at the end of the run instead lets the decoder
catch up but stops the L0 short, and sums taken while the codes still move decode worse: the refit
needs the final codes. The two rounds of reallocation add EV 0.0016-0.0021 on resid_pre and
0.0007-0.0016 on mlp_out on every seed (forty-fourth step). On the synthetic models every L0 stays
within 1%.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import nn

from gba_lens.saes import refit_check
from gba_lens.saes.refit_error import resolved_refit_error, row_weights
from gba_lens.saes.sparse_refit import SparseRefitStatistics
from gba_lens.saes.threshold_reallocation import encoded_rows, reallocate_thresholds

ROWS = 262_144
"""Rows the refit reads at most: the run's last ones (whole steps; each data-parallel rank keeps its share).
Wider inputs keep fewer (``MAX_ROW_BYTES``; whether they are enough: :mod:`gba_lens.saes.refit_check`). On
the stdlib LM's preset, 262,144 rows instead of 131,072 raise explained variance by 0.0003 on resid_pre and
0.0001 on mlp_out on every seed (docs/experiments/prior_free.md, forty-eighth step)."""
MAX_ROW_BYTES = 1 << 29
"""Bytes of those rows (float32, kept on the host) at most: fewer rows for a wide input."""
MAX_LATENTS = 8_192
"""Widest SAE whose sums are d_sae x d_sae matrices (four, 2 GiB in float64 at this width), solved by factoring
them. A wider SAE keeps its rows' sparse codes instead and is solved by conjugate gradients on them
(:mod:`gba_lens.saes.sparse_refit`)."""
WIDE_CHUNK_ENTRIES = 1 << 23
"""A wider SAE's rows are encoded in chunks of about this many [rows, d_sae] entries."""
RIDGE = 1e-3
"""lambda over the mean of diag(Z^T Z): how strongly a rarely firing latent keeps its trained row (on the
stdlib LM, 1e-2 keeps a fifth of mlp_out's CE gain back; 1e-3 gives what 1e-6 gives)."""
OFFSET_STEPS = 5
"""Gauss-Newton steps of the firing offsets at most, each followed by the decoder (0: the decoder alone). On
the stdlib LM's preset the third step lowers the error by under 1e-5 of it (seed 0, both hooks)."""
HALVINGS = 4
"""A step that does not lower the error is halved up to this many times; then the offsets stop."""
TOLERANCE = 1e-5
"""The offsets stop once a step lowers the error by less than this share of it."""
REALLOCATIONS = 2
"""Rounds, after the first fit (JumpReLU gate), of the firings reallocated between latents at one price
(:mod:`gba_lens.saes.threshold_reallocation`), each followed by the fit again (0: the thresholds stay)."""
PAIR_COST = 1000
"""On a CPU, a pair of a row's active latents added one at a time costs about this many multiply-adds of a
dense float32 matrix product (830-14,000 measured on one core, 512 to 4,096 latents at L0 10-60, chunks of
4,096 rows: ``benchmarks/bench_refit_sums.py``); set near the low end (:func:`sums_path`)."""
ENTRY_COST = 8
"""On a CPU, the sparse codes times a dense matrix cost about this many dense multiply-adds per active entry
and latent (7-10 measured as above)."""
OUTPUT_COST = 400
"""... and about this many per entry of their d_sae x d_sae products (100-600 measured as above)."""


def sums_path(per_row: Int[torch.Tensor, " rows"], d_sae: int) -> Literal["dense", "pairs", "sparse"]:
    """How a CPU adds the sums of rows with ``per_row`` active latents each, the cheapest of: ``"dense"``, the
    dense products of the rows' codes; ``"pairs"``, the products of each row's pairs of active latents
    (``PAIR_COST`` each); ``"sparse"``, the sparse codes times the dense ones (``ENTRY_COST`` per active entry
    and latent, ``OUTPUT_COST`` per entry of the products)."""
    pairs = int((per_row * (per_row + 1)).sum()) // 2  # each row's pairs of active latents, itself included
    costs: dict[Literal["dense", "pairs", "sparse"], int] = {
        "dense": len(per_row) * d_sae * d_sae, "pairs": pairs * PAIR_COST,
        "sparse": int(per_row.sum()) * d_sae * ENTRY_COST + d_sae * d_sae * OUTPUT_COST}
    return min(costs, key=costs.__getitem__)


def _transposed(latents: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The transpose of a [rows, d_sae] matrix of ``shape`` holding ``values`` at (``rows``, ``latents``), as a
    sparse [d_sae, rows] matrix (valid by construction: its invariants are not checked)."""
    return torch.sparse_coo_tensor(torch.stack([latents, rows]), values, (shape[1], shape[0]), check_invariants=False)


def rows_to_keep(total_samples: int, d_in: int) -> int:
    """How many of a run's last rows the refit reads (``ROWS``, fewer for a wide input or a short run)."""
    return max(1, min(ROWS, MAX_ROW_BYTES // (4 * d_in), total_samples))


class RefitStatistics(nn.Module):
    """The sums the least-squares decoder (and offsets) need, over one rank's rows (all-reduced across ranks).

    Buffers (float64 sums of each chunk's products, which are float32 for float32 codes: ranks' sums, in
    another order, solve to one process's decoder to that rounding, about 1e-5 of it; float32 on a device
    without float64): ``gram`` [d_sae, d_sae] U^T U; ``cross`` [d_sae, d_in] U^T (X - b_pre);
    ``energy`` [] |X - b_pre|^2; ``rows`` [] the rows read; with ``offsets``, ``gate_gram`` G^T G,
    ``gate_code`` G^T U [d_sae, d_sae] and ``gate_cross`` G^T (X - b_pre) [d_sae, d_in]."""

    gram: torch.Tensor
    cross: torch.Tensor
    energy: torch.Tensor
    rows: torch.Tensor

    def __init__(self, d_sae: int, d_in: int, device: torch.device | str, offsets: bool = False):
        super().__init__()
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        names = ("gram", "cross", *(("gate_gram", "gate_code", "gate_cross") if offsets else ()))
        for name in names:
            self.register_buffer(name, torch.zeros(d_sae, d_in if name.endswith("cross") else d_sae, dtype=dtype,
                                                   device=device))
        self.register_buffer("energy", torch.zeros((), dtype=dtype, device=device))
        self.register_buffer("rows", torch.zeros((), dtype=dtype, device=device))
        self.register_buffer("firings", torch.zeros(d_sae, dtype=dtype, device=device))
        self.offsets = offsets

    @torch.no_grad()
    def add(self, codes: Float[torch.Tensor, "rows d_sae"], targets: Float[torch.Tensor, "rows d_in"],
            gates: Float[torch.Tensor, "rows d_sae"] | None = None, weights: Float[torch.Tensor, " rows"] | None = None
            ) -> None:
        """Add rows' codes (without offsets), targets and, with ``offsets``, gates (1 where a latent fires):
        dense products, or on a CPU, where the codes are sparse enough that it is cheaper (:func:`sums_path`),
        the products of each row's active latents only (a 4,096-latent SAE at L0 10, 512 inputs: a twentieth
        of the dense time) or the sparse codes times the dense ones. ``weights``: each row's weight in the
        squared error (:mod:`gba_lens.saes.refit_error`; None: 1), taken as the rows' codes, gates and targets
        times its square root."""
        active = codes != 0 if gates is None else gates != 0
        work = torch.promote_types(codes.dtype, torch.float32)
        root = None if weights is None else weights.to(codes.device, work).sqrt()
        if root is not None:
            codes, targets = codes * root[:, None], targets * root[:, None]
        wide_targets = targets.to(self.gram.dtype)
        self.energy.add_(wide_targets.pow(2).sum())
        self.rows.add_(len(codes))
        self.firings.add_(active.sum(0))
        per_row = active.sum(1) if codes.device.type == "cpu" else None  # the sparse paths are a CPU's only
        path = "dense" if per_row is None else sums_path(per_row, codes.shape[1])
        if path == "pairs":
            self._add_pairs(codes, active, per_row, root, wide_targets)
            return
        # each chunk's products in the codes' precision (float32 at least: half float64's time on a CPU,
        # a small share of it on most GPUs), added up in the buffers' float64
        dense, chunk_targets = codes.to(work), targets.to(work)
        gate = None
        if self.offsets:
            gate = active.to(work) if root is None else active.to(work) * root[:, None]
        if path == "sparse":  # the transposed codes (and gates) as sparse matrices, times the dense ones
            rows, latents = active.nonzero(as_tuple=True)
            codes_t = _transposed(latents, rows, dense[rows, latents], dense.shape)
            gates_t = None if gate is None else _transposed(latents, rows, gate[rows, latents], gate.shape)
            product = torch.sparse.mm
        else:
            codes_t, gates_t = dense.t(), None if gate is None else gate.t()
            product = torch.matmul
        self.gram.add_(product(codes_t, dense))
        self.cross.add_(product(codes_t, chunk_targets))
        if gates_t is not None:
            self.gate_gram.add_(product(gates_t, gate))
            self.gate_code.add_(product(gates_t, dense))
            self.gate_cross.add_(product(gates_t, chunk_targets))

    def _add_pairs(self, codes: torch.Tensor, active: torch.Tensor, per_row: torch.Tensor, root: torch.Tensor | None,
                   wide_targets: torch.Tensor) -> None:
        """The sums from each row's active entries: each pair of a row's active latents taken once (an entry
        with itself and with each entry after it in its row) and added at [a, b] and at [b, a]."""
        d_sae = codes.shape[1]
        flat = active.reshape(-1).nonzero().squeeze(1)  # row by row
        rows, latents = flat // d_sae, flat % d_sae
        values = codes.reshape(-1).index_select(0, flat).to(self.gram.dtype)
        ones = torch.ones_like(values) if root is None else root.index_select(0, rows).to(self.gram.dtype)

        def times_targets(entries: torch.Tensor) -> torch.Tensor:  # (the sparse codes or gates)^T targets
            return torch.sparse.mm(_transposed(latents, rows, entries, codes.shape), wide_targets)

        self.cross.add_(times_targets(values))
        if self.offsets:
            self.gate_cross.add_(times_targets(ones))
        entry = torch.arange(len(flat))
        position = entry - (torch.cumsum(per_row, 0) - per_row).index_select(0, rows)  # within its row
        partners = per_row.index_select(0, rows) - position  # itself and the entries after it in its row
        left = torch.repeat_interleave(entry, partners)
        right = torch.arange(len(left)) - torch.repeat_interleave(torch.cumsum(partners, 0) - partners - entry,
                                                                  partners)
        first, second = latents.index_select(0, left), latents.index_select(0, right)
        above, below, diagonal = first * d_sae + second, second * d_sae + first, latents * (d_sae + 1)
        value_1, value_2 = values.index_select(0, left), values.index_select(0, right)

        def add(buffer: torch.Tensor, one_two: torch.Tensor, two_one: torch.Tensor, own: torch.Tensor) -> None:
            # [a, b] and [b, a] of each pair; a latent's pair with itself lands on the diagonal twice
            buffer.view(-1).index_add_(0, above, one_two).index_add_(0, below, two_one).index_add_(0, diagonal, -own)

        products = value_1 * value_2
        add(self.gram, products, products, values * values)
        if self.offsets:
            gate_1, gate_2 = ones.index_select(0, left), ones.index_select(0, right)
            add(self.gate_gram, gate_1 * gate_2, gate_1 * gate_2, ones * ones)
            add(self.gate_code, gate_1 * value_2, gate_2 * value_1, ones * values)

    def reduce_statistics(self, all_reduce: Any) -> None:
        """Data-parallel training: the sums over every rank's rows."""
        for buffer in self.buffers():
            all_reduce(buffer, "sum")

    def firings_per_input(self, d_in: int) -> float:
        """The firings of the average live latent over the input's width."""
        live = int((self.firings > 0).sum())
        return float(self.firings.sum()) / max(live, 1) / d_in

    def _code_sums(self, offset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Z^T Z and Z^T (X - b_pre) for the codes Z = U + G diag(offset) (float64, on the host where the
        device has none)."""
        host = self._host()
        gram, cross = self.gram.to(host, torch.float64), self.cross.to(host, torch.float64)
        if offset is None:
            return gram, cross
        c, gate_code = offset.to(host, torch.float64), self.gate_code.to(host, torch.float64)
        mixed = c[:, None] * gate_code  # (G diag(c))^T U
        gram = gram + mixed + mixed.t() + c[:, None] * self.gate_gram.to(host, torch.float64) * c[None, :]
        return gram, cross + c[:, None] * self.gate_cross.to(host, torch.float64)

    def squared_error(self, decoder: Float[torch.Tensor, "d_sae d_in"],
                      offset: Float[torch.Tensor, " d_sae"] | None = None) -> float:
        """|X - b_pre - Z W|^2 over the rows, from the sums: |X - b_pre|^2 - 2 <W, Z^T X> + <W, Z^T Z W>."""
        gram, cross = self._code_sums(offset)
        w = decoder.to(gram.device, torch.float64)
        return float(self.energy) - float(2 * (w * cross).sum() - (w * (gram @ w)).sum())

    def _host(self) -> torch.device:
        return self.gram.device if self.gram.device.type in ("cpu", "cuda") else torch.device("cpu")

    def _decoder(self, trained: torch.Tensor, offset: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The decoder for the codes with ``offset``, the Cholesky factor of Z^T Z + lambda I, and the rows'
        squared error with them (for the ridge solution W: |X|^2 - <W, Z^T X> + lambda <W, W_trained - W>)."""
        gram, cross = self._code_sums(offset)
        gram = gram.clone() if offset is None else gram  # the ridge is added to a copy of the sums
        ridge = RIDGE * gram.diagonal().mean().clamp(min=1e-12)
        gram.diagonal().add_(ridge)
        trained = trained.to(gram.device, torch.float64)
        factor = torch.linalg.cholesky(gram)  # Z^T Z + lambda I: positive definite
        decoder = torch.cholesky_solve(cross + ridge * trained, factor)
        error = (float(self.energy) - float((decoder * cross).sum())
                 + float(ridge * (decoder * (trained - decoder)).sum()))
        return decoder, factor, error

    def _offset_step(self, decoder: torch.Tensor, factor: torch.Tensor, offset: torch.Tensor, start: torch.Tensor,
                     lowest: torch.Tensor) -> torch.Tensor:
        """One Gauss-Newton step of the offsets, the decoder following them (variable projection: the
        offsets' normal matrix is G^T G less what the codes' span absorbs, G^T Z (Z^T Z + lambda I)^-1 Z^T G,
        times W W^T), pulled towards ``start`` where a latent barely fires, kept at or above ``lowest``."""
        host = self._host()
        w, c = decoder.to(host, torch.float64), offset.to(host, torch.float64)
        gate_gram = self.gate_gram.to(host, torch.float64)
        gate_codes = self.gate_code.to(host, torch.float64) + gate_gram * c[None, :]  # G^T Z
        residual = self.gate_cross.to(host, torch.float64) - gate_codes @ w  # G^T (X - b_pre - Z W)
        gradient = (residual * w).sum(1)
        half = torch.linalg.solve_triangular(factor, gate_codes.t().contiguous(), upper=False)  # L^-1 Z^T G
        absorbed = half.t() @ half  # G^T Z (L L^T)^-1 Z^T G
        system = (gate_gram - absorbed) * (w @ w.t())
        ridge = RIDGE * system.diagonal().mean().clamp(min=1e-12)
        system.diagonal().add_(ridge)
        step = torch.cholesky_solve((gradient - ridge * (c - start.to(host, torch.float64)))[:, None],
                                    torch.linalg.cholesky(system))[:, 0]  # positive definite: a Schur product
        return torch.maximum(c + step, lowest.to(host, torch.float64))

    def solve(self, trained: Float[torch.Tensor, "d_sae d_in"], offset: Float[torch.Tensor, " d_sae"] | None = None,
              lowest: Float[torch.Tensor, " d_sae"] | None = None
              ) -> tuple[Float[torch.Tensor, "d_sae d_in"], Float[torch.Tensor, " d_sae"] | None, float]:
        """The least-squares decoder, pulled towards ``trained`` by ``RIDGE`` (float64; on the host where
        the device has none); with ``offsets``, and the offsets stepped with it from ``offset`` (each at
        least ``lowest``); and the rows' squared error with them."""
        if not self.offsets or offset is None or OFFSET_STEPS <= 0:
            decoder, _, error = self._decoder(trained, offset if self.offsets else None)
            return decoder, offset, error
        assert lowest is not None, "offsets are kept at or above the latents' biases"
        start = offset.to(self._host(), torch.float64)
        offset = start
        decoder, factor, error = self._decoder(trained, offset)
        for _ in range(OFFSET_STEPS):
            step = self._offset_step(decoder, factor, offset, start, lowest) - offset
            for _ in range(HALVINGS):  # a step that does not lower the error is halved
                candidate = offset + step
                found, found_factor, found_error = self._decoder(trained, candidate)
                if found_error < error:
                    break
                step = step / 2
            else:
                break  # no lower error along the step: converged
            converged = error - found_error < TOLERANCE * error
            offset, decoder, factor, error = candidate, found, found_factor, found_error
            if converged:
                break
        return decoder, offset, error


@torch.no_grad()
def refit_decoder(sae: Any, rows: Float[torch.Tensor, "rows d_in"], batch_size: int = 4096) -> dict[str, float]:
    """Replace ``sae``'s decoder (a ``GBATrainingSAE``) by the least-squares one on the codes of ``rows``
    (its inputs, as the trainer gave them; all ranks' sums where ``sae.reduce_window_statistics``
    all-reduces), and with the JumpReLU gate each latent's firing offset (``b_act``, created if the SAE
    has none) with it; then ``REALLOCATIONS`` times the thresholds moved to one price per firing
    (:func:`~gba_lens.saes.threshold_reallocation.reallocate_thresholds`, the L0 held) and the fit again (over
    ``MAX_LATENTS``, solved on the rows' sparse codes by conjugate gradients: :mod:`gba_lens.saes.sparse_refit`).
    The error is each row's, or its share of the row (``refit_error``: :mod:`gba_lens.saes.refit_error`).
    Where the rows give the live latents fewer firings than ``TRUSTED_FIRINGS`` per input, a copy is refitted
    without every ``HELD_OUT``-th row and taken only if it reconstructs those rows better than the trained SAE
    (:mod:`gba_lens.saes.refit_check`). Returns the rows read (over all ranks), their squared error over their
    energy (both weighted as the fit weighs them) before and after, the live latents' firings per input,
    whether the refit was checked (and the held-out rows' error with the trained SAE and the copy) and
    whether the SAE was refitted."""
    if sae.cfg.d_sae > MAX_LATENTS:  # sparse statistics: chunks whose dense codes stay small
        batch_size = max(1, min(batch_size, WIDE_CHUNK_ENTRIES // sae.cfg.d_sae))
    offsets = sae.cfg.gating == "jumprelu" and OFFSET_STEPS > 0  # under the ReLU gate the offset is the bias
    statistics, start = _statistics(sae, rows, batch_size, offsets)
    per_input = statistics.firings_per_input(sae.cfg.d_in)
    if per_input >= refit_check.TRUSTED_FIRINGS:
        return {**_refit(sae, rows, batch_size, offsets, statistics, start), "firings_per_input": per_input,
                "checked": 0.0, "refitted": 1.0}
    rows_read = float(statistics.rows)
    del statistics
    fitted_rows, held_rows = refit_check.split_rows(rows)
    candidate = copy.deepcopy(sae)
    result = _refit(candidate, fitted_rows, batch_size, offsets)
    trained, fitted = (refit_check.held_out_error(one, held_rows, batch_size) for one in (sae, candidate))
    result.update(rows=rows_read, firings_per_input=per_input, checked=1.0, held_out_trained=trained,
                  held_out_fitted=fitted)
    if not fitted < trained:
        return {**result, "error_after": result["error_before"], "refitted": 0.0}
    sae.W_dec.data.copy_(candidate.W_dec)
    sae.b_enc.data.copy_(candidate.b_enc)
    if candidate.b_act is not None:
        _write_offsets(sae, candidate.b_act)
    return {**result, "refitted": 1.0}


def _refit(sae: Any, rows: torch.Tensor, batch_size: int, offsets: bool,
           statistics: RefitStatistics | SparseRefitStatistics | None = None,
           start: torch.Tensor | None = None) -> dict[str, float]:
    """The fit, and each reallocation round followed by the fit again (``statistics``: the first fit's sums
    over ``rows``, with ``start``, where already read)."""
    if statistics is None:
        statistics, start = _statistics(sae, rows, batch_size, offsets)
    result = _solve(sae, statistics, start)
    del statistics
    for _ in range(REALLOCATIONS if sae.cfg.gating == "jumprelu" else 0):
        reallocate_thresholds(sae, rows, batch_size)
        result["error_after"] = _solve(sae, *_statistics(sae, rows, batch_size, offsets))["error_after"]
    return result


def _statistics(sae: Any, rows: torch.Tensor, batch_size: int, offsets: bool
                ) -> tuple[RefitStatistics | SparseRefitStatistics, torch.Tensor | None]:
    """The sums over the codes of ``rows`` (all ranks'), and the offsets the codes were trained with (0 without
    activation_bias; None without ``offsets``)."""
    statistics: RefitStatistics | SparseRefitStatistics
    if sae.cfg.d_sae > MAX_LATENTS:
        statistics = SparseRefitStatistics(sae.cfg.d_sae, sae.cfg.d_in, sae.W_dec.device, offsets, ridge=RIDGE,
                                           offset_steps=OFFSET_STEPS, halvings=HALVINGS, tolerance=TOLERANCE)
    else:
        statistics = RefitStatistics(sae.cfg.d_sae, sae.cfg.d_in, sae.W_dec.device, offsets)
    error_kind = resolved_refit_error(sae)
    start = None
    if offsets:
        start = sae.activation_offset()
        start = torch.zeros_like(sae.b_enc) if start is None else start
    for codes, hidden_pre, scaled in encoded_rows(sae, rows, batch_size):
        gates = None
        if start is not None:
            gates = (hidden_pre > 0).to(codes.dtype)
            codes = codes - gates * start  # u on firings
        statistics.add(codes, scaled - sae.b_dec, gates, row_weights(scaled, error_kind))
    sae.reduce_window_statistics(statistics)
    return statistics, start


def _solve(sae: Any, statistics: RefitStatistics | SparseRefitStatistics, start: torch.Tensor | None
           ) -> dict[str, float]:
    """The decoder (and offsets, from ``start``) that ``statistics`` solve to, into ``sae``: see
    :func:`refit_decoder`."""
    energy = max(float(statistics.energy), 1e-30)
    before = statistics.squared_error(sae.W_dec.detach(), start)
    decoder, offset, after = statistics.solve(sae.W_dec.detach(), start, sae.b_enc.detach())
    sae.W_dec.data.copy_(decoder.to(sae.W_dec.device, sae.W_dec.dtype))
    if offset is not None:
        _write_offsets(sae, offset)
    return {"rows": float(statistics.rows), "error_before": before / energy, "error_after": after / energy}


def _write_offsets(sae: Any, offset: Float[torch.Tensor, " d_sae"]) -> None:
    """``offset`` into the SAE's firing offsets ``b_act``, created (not trained further) where it has none."""
    if sae.b_act is None:
        sae.b_act = nn.Parameter(torch.zeros_like(sae.b_enc), requires_grad=False)
    sae.b_act.data.copy_(offset.to(sae.b_act.device, sae.b_act.dtype))
