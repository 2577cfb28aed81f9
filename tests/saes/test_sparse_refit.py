"""The refit of an SAE wider than the dense sums take (``sparse_refit``): conjugate gradients on the rows' sparse
codes solve the dense refit's problems. The decoder is the dense path's; with the firing offsets the error comes
within a few thousandths of the dense path's Gauss-Newton and below the decoder alone, each offset at or above
its bias; all-reduced products give one process's fit; the solver reaches its tolerance on dense systems."""

from __future__ import annotations

import pytest
import torch

from gba_lens.saes import decoder_refit, sparse_refit
from gba_lens.saes.decoder_refit import refit_decoder
from gba_lens.saes.gba import GBATrainingSAE
from gba_lens.saes.sparse_refit import SparseRefitStatistics, conjugate_gradients
from refit_builders import refit_sae, squared_error


def _both(monkeypatch, **kw) -> tuple[tuple[GBATrainingSAE, dict], tuple[GBATrainingSAE, dict]]:
    """The same SAE refitted by the dense sums and on its sparse codes (MAX_LATENTS under its 24 latents)."""
    (dense, x), (sparse, _) = refit_sae(**kw), refit_sae(**kw)
    dense_result = refit_decoder(dense, x, batch_size=128)  # several chunks
    with monkeypatch.context() as patch:
        patch.setattr(decoder_refit, "MAX_LATENTS", 16)
        patch.setattr(decoder_refit, "RefitStatistics", None)  # the dense sums are not built
        sparse_result = refit_decoder(sparse, x, batch_size=128)
    return (dense, dense_result), (sparse, sparse_result)


@pytest.mark.parametrize("refit_error", ["absolute", "relative"])
def test_the_decoder_alone_is_the_dense_refit_s(refit_error, monkeypatch):
    """Each row weighted as ``refit_error`` says (relative: 1 / its squared norm): the same decoder and errors."""
    monkeypatch.setattr(decoder_refit, "OFFSET_STEPS", 0)
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 0)
    (dense, dense_result), (sparse, sparse_result) = _both(monkeypatch, refit_error=refit_error)
    assert torch.allclose(sparse.W_dec, dense.W_dec, atol=1e-3)  # to the solver's tolerance
    for key in ("rows", "error_before", "error_after", "firings_per_input"):
        assert sparse_result[key] == pytest.approx(dense_result[key], rel=1e-4), key
    assert sparse_result["error_after"] < 0.5 * sparse_result["error_before"]


def test_with_the_offsets_the_error_comes_within_a_few_thousandths_of_the_dense_refit_s(monkeypatch):
    """Gauss-Newton steps of decoder and offsets together: the error the SAE now has, under the decoder alone's
    by nearly the dense path's margin; offsets moved, none under its bias; then the reallocation as the dense."""
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 0)
    (dense, dense_result), (sparse, sparse_result) = _both(monkeypatch)
    alone, x = refit_sae()
    monkeypatch.setattr(decoder_refit, "OFFSET_STEPS", 0)
    alone_error = refit_decoder(alone, x)["error_after"]
    assert sparse_result["error_after"] == pytest.approx(squared_error(sparse, x), rel=1e-5)
    gain, dense_gain = alone_error - sparse_result["error_after"], alone_error - dense_result["error_after"]
    assert dense_gain > 2e-3 and gain > 0.97 * dense_gain
    c, bias = sparse.b_act.detach(), sparse.b_enc.detach()
    assert (c >= bias - 1e-6).all() and (c.abs() > 1e-2).sum() > 10
    monkeypatch.setattr(decoder_refit, "OFFSET_STEPS", 5)
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 2)
    (_, dense_result), (_, sparse_result) = _both(monkeypatch)
    assert sparse_result["error_after"] == pytest.approx(dense_result["error_after"], rel=0.02)


def test_products_all_reduced_over_ranks_give_the_one_process_fit(monkeypatch):
    """Two ranks holding the same rows: every sum and product doubles, the ridges with them; the same fit."""
    monkeypatch.setattr(decoder_refit, "MAX_LATENTS", 16)
    (sae, x), (twice, _) = refit_sae(), refit_sae()
    reduced = []

    def doubled(statistics):
        statistics.reduce_statistics(lambda t, op: reduced.append(op) or t.mul_(2))

    twice.reduce_window_statistics = doubled
    one, two = refit_decoder(sae, x), refit_decoder(twice, x)
    assert two["rows"] == 2 * one["rows"] and two["error_after"] == pytest.approx(one["error_after"], rel=1e-6)
    assert torch.allclose(twice.W_dec, sae.W_dec, atol=1e-6) and torch.allclose(twice.b_act, sae.b_act, atol=1e-6)
    assert len(reduced) > 50 and set(reduced) == {"sum"}  # each product over the rows, not only the sums


def test_the_solver_reaches_its_tolerance_column_by_column_and_as_one_vector():
    torch.manual_seed(0)
    base = torch.randn(40, 40, dtype=torch.float64)
    system = base @ base.T + 0.5 * torch.eye(40, dtype=torch.float64)
    right = torch.randn(40, 3, dtype=torch.float64)
    exact = torch.linalg.solve(system, right)
    diagonal = system.diagonal()[:, None]
    found = conjugate_gradients(lambda p: system @ p, right, diagonal, torch.zeros_like(right))
    assert torch.allclose(found, exact, rtol=1e-4, atol=1e-8)
    # as one vector: A acting on the [40, 3] matrix flattened (columns mixed by a second SPD factor)
    mix = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.5]], dtype=torch.float64)
    apply = lambda p: system @ p @ mix  # noqa: E731  (kron(mix, A) acting on p's columns)
    exact = torch.linalg.solve(torch.kron(mix, system), right.T.reshape(-1)).reshape(3, 40).T
    found = conjugate_gradients(apply, right, diagonal * mix.diagonal()[None], torch.zeros_like(right), columns=False)
    assert torch.allclose(found, exact, rtol=1e-4, atol=1e-8)
    with pytest.MonkeyPatch.context() as patch:  # stopped after 3 iterations: not yet there
        patch.setattr(sparse_refit, "CG_STEPS", 3)
        early = conjugate_gradients(lambda p: system @ p, right, diagonal, torch.zeros_like(right))
        assert not torch.allclose(early, torch.linalg.solve(system, right), rtol=1e-4, atol=1e-8)


def test_rows_read_in_blocks_give_the_products_of_all_rows_at_once(monkeypatch):
    """Blocks of about 8 rows (BLOCK_ENTRIES 64, about 8 active entries a row) and one block: the same Z^T Z P,
    Z^T (X - b_pre) and squared error, with offsets and row weights; each written out densely."""
    torch.manual_seed(2)
    gates = (torch.rand(300, 40) < 0.2).double()
    codes = torch.rand(300, 40, dtype=torch.float64) * gates
    targets, weights = torch.randn(300, 6, dtype=torch.float64), torch.rand(300, dtype=torch.float64) + 0.5
    offset, matrix = torch.randn(40, dtype=torch.float64), torch.randn(40, 6, dtype=torch.float64)
    found = {}
    for entries in (64, 1 << 22):
        monkeypatch.setattr(sparse_refit, "BLOCK_ENTRIES", entries)
        statistics = SparseRefitStatistics(40, 6, "cpu", offsets=True, ridge=decoder_refit.RIDGE, offset_steps=5,
                                           halvings=4, tolerance=1e-5)
        statistics.add(codes[:170], targets[:170], gates[:170], weights[:170])
        statistics.add(codes[170:], targets[170:], gates[170:], weights[170:])
        blocks = list(statistics._blocks_with(offset))
        assert blocks[0][0].dtype == blocks[0][1].dtype == torch.float32  # the entries held in float32
        found[entries] = (len(blocks), statistics._gram_times(blocks, matrix),
                          statistics._transposed_times_targets(blocks), statistics.squared_error(matrix, offset))
    root = weights.sqrt()[:, None]
    z, t = (codes + gates * offset) * root, targets * root
    assert found[64][0] > 30 and found[1 << 22][0] == 1
    for count, gram_times, cross, error in found.values():  # each product in float32, the sums in float64
        assert gram_times.dtype == cross.dtype == torch.float64
        assert torch.allclose(gram_times, z.T @ (z @ matrix), rtol=1e-5, atol=1e-5)
        assert torch.allclose(cross, z.T @ t, rtol=1e-5, atol=1e-5)
        assert error == pytest.approx(float((t - z @ matrix).pow(2).sum()), rel=1e-6)
    assert torch.allclose(found[64][1], found[1 << 22][1], rtol=1e-6, atol=1e-6)


def test_a_block_s_matrices_multiply_as_its_dense_code_in_the_layouts_fast_on_a_cpu():
    """On a CPU the code is CSR and its transpose COO left in the rows' order (its product then reads the dense
    operand front to back): both multiply as the dense code, with empty rows first, inside and last."""
    torch.manual_seed(4)
    code = torch.rand(50, 30, dtype=torch.float64) * (torch.rand(50, 30) < 0.2)
    code[[0, 17, 18, 48, 49]] = 0
    row, latent = code.nonzero(as_tuple=True)
    forward, backward = sparse_refit.row_major_pair(row, latent, code[row, latent], (50, 30))
    assert forward.layout == torch.sparse_csr and not backward.is_coalesced()
    right, rows = torch.randn(30, 7, dtype=torch.float64), torch.randn(50, 7, dtype=torch.float64)
    assert torch.allclose(torch.sparse.mm(forward, right), code @ right, atol=1e-12)
    assert torch.allclose(torch.sparse.mm(backward, rows), code.T @ rows, atol=1e-12)


def test_a_rank_without_rows_takes_part_in_every_product_with_zeros():
    """A data-parallel rank that kept no rows: no blocks, zero products, each still all-reduced; with the other
    ranks' rows given as the all-reduce's sums it solves what they solve."""
    reduced = []
    empty = SparseRefitStatistics(6, 3, "cpu", offsets=False, ridge=1e-3, offset_steps=5, halvings=4, tolerance=1e-5)
    empty.reduce_statistics(lambda t, op: reduced.append(t.shape))
    assert empty._block_list() == [] and len(reduced) == 3  # energy, rows, firings
    matrix = torch.randn(6, 3, dtype=torch.float64)
    assert torch.equal(empty._gram_times([], matrix), torch.zeros(6, 3, dtype=torch.float64))
    assert empty.squared_error(matrix) == 0.0 and len(reduced) == 5
