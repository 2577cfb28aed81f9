"""The refit's systems solved by conjugate gradients on the rows' sparse codes, for SAEs too wide for dense sums.

:class:`~gba_lens.saes.decoder_refit.RefitStatistics` holds the refit's sums as d_sae x d_sae matrices and
factors them: at 65,536 latents one such matrix is 32 GiB in float64. A wide SAE's code is sparse, though, so
the rows' codes themselves are small (each row's active entries): this module keeps them and applies
Z^T Z to a matrix as Z^T (Z P), two sparse products over the rows, never forming it. The same problems are solved:

* the decoder: (Z^T Z + lambda I) W = Z^T (X - b_pre) + lambda W_trained, by conjugate gradients with each
  latent's diagonal as preconditioner, every column of W at once, from the trained decoder;
* the firing offsets (JumpReLU gate, Z = U + G diag(c)): Gauss-Newton steps of the decoder and the offsets
  together, each solved by conjugate gradients on the pair (dW, dc) and followed by the decoder's solve for the
  new offsets. With the decoder at its least squares for the current offsets this is the step the dense path
  takes by variable projection from a factored d_sae x d_sae system. Its offsets' pull towards their start is
  lambda over the mean of diag(G^T G) |w_m|^2 (the dense path's: of its system's diagonal, which is smaller), so
  the offsets end a little closer to where they started.

Each step halves back, as the dense path's do, where it does not lower the error; offsets stay at or above the
latents' biases. Data-parallel ranks each keep their rows and all-reduce every product over them (a
[d_sae, d_in] sum per iteration), so every rank iterates alike.

Measured (docs/experiments/prior_free.md, fifty-third to fifty-fifth steps): a trained 2,048-latent SAE of the
stdlib LM, refitted this way on 262,144 rows, kept 99.2% of the dense path's gain in squared error (float64
products); with float32 products, on 32,768 rows, its error is the dense path's to 0.1% and it takes about the
dense path's CPU time (68-70 s against 61-73 s, two reallocation rounds). Its cost grows with the
rows' active entries, d_in and the iterations, not with d_sae: a 16,384-latent SAE of the stdlib LM (L0 71) took
1,349 s on 262,144 rows, and lowered other rows' relative error by a quarter.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch
from jaxtyping import Float, Int
from torch import nn
from tqdm.auto import tqdm

CG_TOLERANCE = 1e-8
"""The conjugate gradients stop once an iteration lowers the rows' squared error (the quadratic they minimise) by
less than this share of the rows' energy, or every column's residual is under this share of its right-hand
side's norm. 1e-9 (with ``STEP_TOLERANCE`` 1e-7) takes a fifth more products for the same held-out error
(docs/experiments/prior_free.md, fifty-fifth step)."""
STEP_TOLERANCE = 1e-6
"""A Gauss-Newton step's solve stops once an iteration lowers the step's model of the squared error by less than
this share of the rows' energy (a direction, which the decoder's solve then settles to ``CG_TOLERANCE``)."""
CG_STEPS = 500
"""... or after this many iterations."""
BLOCK_ENTRIES = 1 << 22
"""Active entries per block of rows a product reads at once (its [rows, d_in] intermediate is that block's)."""


def _entries(values: torch.Tensor, gate: torch.Tensor, latent: torch.Tensor, offset: torch.Tensor | None,
             gated: bool) -> torch.Tensor:
    """A block's nonzero entries of Z (the codes, plus the gates times each latent's ``offset``), or of G."""
    return gate if gated else (values if offset is None else values + gate * offset[latent])


class SparseRefitStatistics(nn.Module):
    """The rows' sparse codes (and gates) and targets, and the refit solved on them by conjugate gradients.

    The same interface as :class:`~gba_lens.saes.decoder_refit.RefitStatistics`: ``add`` chunks of rows,
    ``reduce_statistics`` (data parallel: it also keeps the all-reduce for the products), then ``solve`` and
    ``squared_error``. Buffers (float64 on a CPU or CUDA device): ``energy`` [] |X - b_pre|^2, ``rows`` [],
    ``firings`` [d_sae]; the entries are held as plain tensors (the rows of this rank). The entries and targets
    are held, and each product over the rows computed, in float32 (the precision SAEs train in); the products'
    sums over blocks and ranks, and the solver, in float64."""

    energy: torch.Tensor
    rows: torch.Tensor
    firings: torch.Tensor
    entry_dtype = torch.float32  # the rows' entries and targets, and each product over them

    def __init__(self, d_sae: int, d_in: int, device: torch.device | str, offsets: bool = False, *,
                 ridge: float, offset_steps: int, halvings: int, tolerance: float):
        """``ridge``, ``offset_steps``, ``halvings``, ``tolerance``: the dense refit's ``RIDGE``, ``OFFSET_STEPS``,
        ``HALVINGS`` and ``TOLERANCE`` (:mod:`gba_lens.saes.decoder_refit` passes its own)."""
        super().__init__()
        self.ridge, self.offset_steps, self.halvings, self.tolerance = ridge, offset_steps, halvings, tolerance
        self._kept_rows = 0
        self.dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.d_sae, self.d_in, self.offsets = d_sae, d_in, offsets
        self.register_buffer("energy", torch.zeros((), dtype=self.dtype, device=device))
        self.register_buffer("rows", torch.zeros((), dtype=self.dtype, device=device))
        self.register_buffer("firings", torch.zeros(d_sae, dtype=self.dtype, device=device))
        self._entries: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._targets: list[torch.Tensor] = []
        self._all_reduce: Callable[[torch.Tensor, str], None] | None = None
        self._progress: Callable[[], object] | None = None  # one call per product over the rows, while solving
        self._blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        # sparse matrices built from the blocks: G's (the gates do not move) and Z's for the last offsets asked
        # (a decoder's solve, its error and the next Gauss-Newton step read the same ones)
        self._gate_matrices: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._gate_diagonal: torch.Tensor | None = None  # diag(G^T G), all-reduced once (the gates do not move)
        self._code_matrices: tuple[torch.Tensor | None, list] | None = None

    @torch.no_grad()
    def add(self, codes: Float[torch.Tensor, "rows d_sae"], targets: Float[torch.Tensor, "rows d_in"],
            gates: Float[torch.Tensor, "rows d_sae"] | None = None, weights: Float[torch.Tensor, " rows"] | None = None
            ) -> None:
        """Keep rows' active entries: codes (without offsets), gates (1 where a latent fires, with ``offsets``)
        and targets, each row's times the square root of its ``weights`` (None: 1)."""
        active = codes != 0 if gates is None else gates != 0
        row, latent = active.nonzero(as_tuple=True)
        root = None if weights is None else weights.to(codes.device, self.dtype).sqrt()
        values = codes[row, latent].to(self.entry_dtype)
        gate = torch.ones_like(values) if root is None else root[row].to(self.entry_dtype)
        wide_targets = targets.to(self.dtype) if root is None else targets.to(self.dtype) * root[:, None]
        self._entries.append((row + self._kept_rows, latent, values if root is None else values * gate, gate))
        self._targets.append(wide_targets.to(self.entry_dtype))
        self._kept_rows += len(codes)
        self.energy.add_(wide_targets.pow(2).sum())
        self.rows.add_(len(codes))
        self.firings.add_(active.sum(0))
        self._blocks = self._gate_matrices = self._gate_diagonal = self._code_matrices = None

    def reduce_statistics(self, all_reduce: Callable[[torch.Tensor, str], None]) -> None:
        """Data-parallel training: the sums over every rank's rows; every product from now on is all-reduced too."""
        self._all_reduce = all_reduce
        for buffer in self.buffers():
            all_reduce(buffer, "sum")

    def firings_per_input(self, d_in: int) -> float:
        """The firings of the average live latent over the input's width."""
        live = int((self.firings > 0).sum())
        return float(self.firings.sum()) / max(live, 1) / d_in

    # ------------------------------------------------------------------------------ products over the rows
    def _reduced(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._progress is not None:
            self._progress()
        if self._all_reduce is not None:
            self._all_reduce(tensor, "sum")
        return tensor

    def _block_list(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The kept rows in blocks of about ``BLOCK_ENTRIES`` entries: (rows, latents, codes, gates, targets), the
        rows counted from the block's first."""
        if self._blocks is None and not self._targets:  # no rows on this rank: its products are 0
            self._blocks = []
        if self._blocks is None:
            row = torch.cat([e[0] for e in self._entries])
            latent, values, gate = (torch.cat([e[i] for e in self._entries]) for i in (1, 2, 3))
            targets = torch.cat(self._targets)
            self._entries = [(row, latent, values, gate)]
            self._targets = [targets]
            self._blocks = []
            n_rows = len(targets)
            per_row = max(1, len(row) // max(n_rows, 1))
            step = max(1, BLOCK_ENTRIES // per_row)
            for first in range(0, n_rows, step):
                last = min(first + step, n_rows)
                lo, hi = (int(i) for i in torch.searchsorted(row, torch.tensor([first, last], device=row.device)))
                self._blocks.append((row[lo:hi] - first, latent[lo:hi], values[lo:hi], gate[lo:hi],
                                     targets[first:last]))
        return self._blocks

    def _blocks_with(self, offset: torch.Tensor | None, gated: bool = False
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per block: Z (or G with ``gated``) as a sparse [rows, d_sae] matrix, its transpose, and the targets."""
        narrow_offset = None if offset is None else offset.to(self.entry_dtype)  # once, not per block's entries
        for row, latent, values, gate, targets in self._block_list():
            entries = _entries(values, gate, latent, narrow_offset, gated)
            yield (*row_major_pair(row, latent, entries, (len(targets), self.d_sae)), targets)

    def _code_blocks(self, offset: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`_blocks_with` ``offset``, built once for the last offsets asked."""
        kept = self._code_matrices
        same = kept is not None and (kept[0] is offset or (kept[0] is not None and offset is not None
                                                           and torch.equal(kept[0], offset)))
        if not same:
            self._code_matrices = None  # the old matrices go before the new ones are built
            self._code_matrices = (offset, list(self._blocks_with(offset)))
        return self._code_matrices[1]

    def _gate_blocks(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`_blocks_with` the gates, built once."""
        if self._gate_matrices is None:
            self._gate_matrices = list(self._blocks_with(None, gated=True))
        return self._gate_matrices

    def _gram_times(self, blocks: list, matrix: torch.Tensor) -> torch.Tensor:
        """Z^T Z ``matrix`` over every rank's rows (``blocks``: :meth:`_blocks_with`'s, listed once per solve)."""
        out = torch.zeros_like(matrix)
        narrow = matrix.to(self.entry_dtype)
        for forward, backward, _ in blocks:
            out.add_(torch.sparse.mm(backward, torch.sparse.mm(forward, narrow)))
        return self._reduced(out)

    def _transposed_times_targets(self, blocks: list) -> torch.Tensor:
        """Z^T (X - b_pre) over every rank's rows."""
        out = torch.zeros(self.d_sae, self.d_in, dtype=self.dtype, device=self.energy.device)
        for _, backward, targets in blocks:
            out.add_(torch.sparse.mm(backward, targets))
        return self._reduced(out)

    def _diagonal(self, offset: torch.Tensor | None, gated: bool = False) -> torch.Tensor:
        """diag(Z^T Z) (or diag(G^T G)) over every rank's rows."""
        out = torch.zeros(self.d_sae, dtype=self.dtype, device=self.energy.device)
        for _, latent, values, gate, _ in self._block_list():
            entries = _entries(values, gate, latent, offset, gated).to(self.dtype)
            out.index_add_(0, latent, entries * entries)
        return self._reduced(out)

    def _negligible(self) -> float:
        """What an iteration of the decoder's solve must lower the rows' squared error by to go on."""
        return CG_TOLERANCE * float(self.energy)

    def squared_error(self, decoder: Float[torch.Tensor, "d_sae d_in"],
                      offset: Float[torch.Tensor, " d_sae"] | None = None) -> float:
        """|X - b_pre - Z W|^2 over every rank's rows."""
        w = decoder.to(self.energy.device, self.entry_dtype)
        c = None if offset is None or not self.offsets else offset.to(self.energy.device, self.dtype)
        total = torch.zeros((), dtype=self.dtype, device=self.energy.device)
        for forward, _, targets in self._code_blocks(c):
            total.add_((targets.to(self.dtype) - torch.sparse.mm(forward, w).to(self.dtype)).pow(2).sum())
        return float(self._reduced(total))

    # ------------------------------------------------------------------------------ the solves
    def _decoder(self, trained: torch.Tensor, offset: torch.Tensor | None, start: torch.Tensor) -> torch.Tensor:
        """(Z^T Z + lambda I)^-1 (Z^T (X - b_pre) + lambda W_trained), from ``start``."""
        blocks = self._code_blocks(offset)
        diagonal = self._diagonal(offset)
        ridge = self.ridge * diagonal.mean().clamp(min=1e-12)
        right = self._transposed_times_targets(blocks) + ridge * trained
        return conjugate_gradients(lambda p: self._gram_times(blocks, p) + ridge * p, right,
                                   (diagonal + ridge)[:, None], start, negligible=self._negligible())

    def _offset_step(self, decoder: torch.Tensor, offset: torch.Tensor, start: torch.Tensor, lowest: torch.Tensor,
                     trained: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Gauss-Newton step of the decoder and offsets together, solved matrix-free; its offsets (pulled
        towards ``start`` where a latent barely fires, at or above ``lowest``). With the residual
        r = X - b_pre - Z W and the step's change v = Z dW + G diag(dc) W of the reconstruction, the step solves
        (Z^T v + lambda dW, rowsum(W o G^T v) + mu dc) = (Z^T r, rowsum(W o G^T r) - mu (c - start)), the decoder
        being the least-squares one for ``offset`` (its gradient 0). Its offsets are the variable-projection step
        the dense refit takes from the factored system; returned with the decoder's step, both as full steps."""
        code_blocks, gate_blocks = self._code_blocks(offset), self._gate_blocks()
        code_diagonal = self._diagonal(offset)
        ridge = self.ridge * code_diagonal.mean().clamp(min=1e-12)
        if self._gate_diagonal is None:  # at every rank's first step alike
            self._gate_diagonal = self._diagonal(None, gated=True)
        offset_diagonal = self._gate_diagonal * decoder.pow(2).sum(1)
        offset_ridge = self.ridge * offset_diagonal.mean().clamp(min=1e-12)

        def system(step: torch.Tensor) -> torch.Tensor:  # [d_sae, d_in + 1]: the decoder's step, the offsets'
            d_decoder, offset_change = (part.to(self.entry_dtype) for part in (step[:, :-1], step[:, -1:] * decoder))
            out = torch.zeros_like(step)
            for (forward, backward, _), (gate_forward, gate_backward, _) in zip(code_blocks, gate_blocks):
                change = torch.sparse.mm(forward, d_decoder) + torch.sparse.mm(gate_forward, offset_change)
                out[:, :-1].add_(torch.sparse.mm(backward, change))
                out[:, -1].add_((torch.sparse.mm(gate_backward, change) * decoder).sum(1))
            out = self._reduced(out)
            out[:, :-1].add_(ridge * step[:, :-1])
            out[:, -1].add_(offset_ridge * step[:, -1])
            return out

        right = torch.zeros(self.d_sae, self.d_in + 1, dtype=self.dtype, device=decoder.device)
        for (forward, backward, targets), (_, gate_backward, _) in zip(code_blocks, gate_blocks):
            residual = targets - torch.sparse.mm(forward, decoder.to(self.entry_dtype))
            right[:, :-1].add_(torch.sparse.mm(backward, residual))
            right[:, -1].add_((torch.sparse.mm(gate_backward, residual) * decoder).sum(1))
        right = self._reduced(right)
        right[:, :-1].sub_(ridge * (decoder - trained))
        right[:, -1].sub_(offset_ridge * (offset - start))
        diagonal = torch.cat([(code_diagonal + ridge)[:, None].expand(-1, self.d_in),
                              (offset_diagonal + offset_ridge)[:, None]], 1)
        step = conjugate_gradients(system, right, diagonal, torch.zeros_like(right), columns=False,
                                   negligible=STEP_TOLERANCE * float(self.energy))
        return torch.maximum(offset + step[:, -1], lowest) - offset, step[:, :-1]

    def solve(self, trained: Float[torch.Tensor, "d_sae d_in"], offset: Float[torch.Tensor, " d_sae"] | None = None,
              lowest: Float[torch.Tensor, " d_sae"] | None = None
              ) -> tuple[Float[torch.Tensor, "d_sae d_in"], Float[torch.Tensor, " d_sae"] | None, float]:
        """The least-squares decoder, pulled towards ``trained`` by ``ridge``; with ``offsets``, and the offsets
        stepped with it from ``offset`` (each at least ``lowest``); and the rows' squared error with them."""
        with tqdm(desc="decoder refit on sparse codes", unit=" products", leave=False) as bar:
            self._progress = bar.update
            try:
                return self._solve(trained, offset, lowest)
            finally:
                self._progress = None

    def _solve(self, trained: torch.Tensor, offset: torch.Tensor | None, lowest: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        device = self.energy.device
        trained = trained.to(device, self.dtype)
        if not self.offsets or offset is None or self.offset_steps <= 0:
            c = offset.to(device, self.dtype) if self.offsets and offset is not None else None
            decoder = self._decoder(trained, c, trained)
            return decoder, offset, self.squared_error(decoder, c)
        assert lowest is not None, "offsets are kept at or above the latents' biases"
        start = offset.to(device, self.dtype)
        lowest = lowest.to(device, self.dtype)
        offset = start
        decoder = self._decoder(trained, offset, trained)
        error = self.squared_error(decoder, offset)
        for _ in range(self.offset_steps):
            step, decoder_step = self._offset_step(decoder, offset, start, lowest, trained)
            for _ in range(self.halvings):  # a step that does not lower the error is halved
                candidate = offset + step
                found = self._decoder(trained, candidate, decoder + decoder_step)  # from the step's own decoder
                found_error = self.squared_error(found, candidate)
                if found_error < error:
                    break
                step, decoder_step = step / 2, decoder_step / 2
            else:
                break  # no lower error along the step: converged
            converged = error - found_error < self.tolerance * error
            offset, decoder, error = candidate, found, found_error
            if converged:
                break
        return decoder, offset, error


def row_major_pair(
    row: Int[torch.Tensor, " nnz"], latent: Int[torch.Tensor, " nnz"], entries: Float[torch.Tensor, " nnz"],
    shape: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """A [rows, d_sae] sparse matrix of entries listed row-major (each row's latents ascending, none twice) and its
    transpose, each in the layout its products with dense matrices are fastest in on the entries' device.

    On a CPU: the matrix in CSR, and the transpose as COO entries left in the rows' order, uncoalesced. torch's CPU
    product of a COO matrix walks its entries in storage order, adding each times a row of the dense operand: in
    the rows' order it reads the [rows, d_in] operand once, front to back, where the transpose's coalesced order
    (by latent) jumps across it for every entry (3x-4x the time at 65,536 rows x 40 entries x 128 columns; the CSR
    product 1.2x-1.4x faster than the COO one). Elsewhere both coalesced COO, as before (GPU layouts not measured)."""
    index = torch.stack([row, latent])
    if entries.device.type != "cpu":
        return (torch.sparse_coo_tensor(index, entries, shape, check_invariants=False).coalesce(),
                torch.sparse_coo_tensor(index.flip(0), entries, shape[::-1], check_invariants=False).coalesce())
    starts = torch.cat([row.new_zeros(1), torch.bincount(row, minlength=shape[0]).cumsum(0)])  # each row's first entry
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        forward = torch.sparse_csr_tensor(starts, latent, entries, shape, check_invariants=False)
    return forward, torch.sparse_coo_tensor(index.flip(0), entries, shape[::-1], check_invariants=False)


def conjugate_gradients(
    apply: Callable[[torch.Tensor], torch.Tensor], right: Float[torch.Tensor, "n k"],
    diagonal: Float[torch.Tensor, "n 1"] | Float[torch.Tensor, "n k"], start: Float[torch.Tensor, "n k"],
    columns: bool = True, negligible: float = 0.0,
) -> Float[torch.Tensor, "n k"]:
    """Solve A X = ``right`` (A symmetric positive definite, given by ``apply``), preconditioned by A's
    ``diagonal``, from ``start``: each column apart where A acts on columns apart (``columns``), else the
    matrix as one vector; until the residual (each column's) is under ``CG_TOLERANCE`` of the right-hand
    side's norm, an iteration lowers X^T A X - 2 right^T X (for normal equations, the squared error) by at most
    ``negligible``, or after ``CG_STEPS`` iterations."""
    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(0) if columns else (a * b).sum()

    inverse = 1.0 / diagonal
    solution = start.clone()
    residual = right - apply(solution)
    target = CG_TOLERANCE * dot(right, right).sqrt().clamp(min=1e-300)
    preconditioned = residual * inverse
    direction = preconditioned.clone()
    product = dot(residual, preconditioned)
    for _ in range(CG_STEPS):
        if bool((dot(residual, residual).sqrt() <= target).all()):
            break
        applied = apply(direction)
        alpha = product / dot(direction, applied).clamp(min=1e-300)
        lowered = float((alpha * product).sum())  # X^T A X - 2 right^T X falls by alpha r^T z per column
        solution.add_(direction * alpha)
        residual.sub_(applied * alpha)
        preconditioned = residual * inverse
        next_product = dot(residual, preconditioned)
        direction = preconditioned + direction * (next_product / product.clamp(min=1e-300))
        product = next_product
        if lowered <= negligible:
            break
    return solution
