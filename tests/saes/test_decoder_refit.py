"""``decoder_refit``: the decoder replaced by the least-squares one on the trained code, with each latent's
firing offset under the JumpReLU gate.

The decoder alone solves (Z^T Z + lambda I) W = Z^T (s x - b_pre) + lambda W_trained in the SAE's own units
(with ``per_token`` each row divided by its norm first); a latent that never fires keeps its row; with the
offsets, Gauss-Newton steps (the decoder following them) reach an error no higher than a generic
optimiser's, the offsets at or above the biases, and the SAE with them is still SAELens's JumpReLU;
all-reduced sums give one process's decoder and offsets; too wide an SAE is refused."""

from __future__ import annotations

import pytest
import torch

from gba_lens.saes import decoder_refit
from gba_lens.saes.decoder_refit import MAX_LATENTS, RIDGE, refit_decoder, rows_to_keep
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.gba_options import OPTIONS_ADDED_LATER, GBAOptions
from refit_builders import refit_sae, squared_error


def _sae(input_norm: str = "unit_mean", seed: int = 0) -> tuple[GBATrainingSAE, torch.Tensor]:
    return refit_sae(seed, input_norm=input_norm)


def _expected(sae: GBATrainingSAE, x: torch.Tensor, input_norm: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ridge least-squares decoder, written out: codes Z, targets in the SAE's units, solution."""
    sae.eval()
    with torch.no_grad():
        z = sae.encode(x).double()
    scaled = x.double() * float(sae.input_scale)
    if input_norm == "per_token":
        scaled = scaled / x.double().norm(dim=-1, keepdim=True)
    target = scaled - sae.b_dec.detach().double()
    gram = z.T @ z
    ridge = RIDGE * gram.diagonal().mean()
    w = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype),
                           z.T @ target + ridge * sae.W_dec.detach().double())
    return z, target, w


@pytest.mark.parametrize("input_norm", ["unit_mean", "per_token"])
def test_the_refit_is_the_ridge_least_squares_decoder_of_the_code_in_the_sae_s_units(input_norm, monkeypatch):
    monkeypatch.setattr(decoder_refit, "OFFSET_STEPS", 0)  # the decoder alone
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 0)  # on the trained thresholds
    sae, x = _sae(input_norm)
    z, target, expected = _expected(sae, x, input_norm)
    trained = sae.W_dec.detach().clone()
    error = lambda w: float((target - z @ w.double()).pow(2).sum() / target.pow(2).sum())  # noqa: E731
    result = refit_decoder(sae, x, batch_size=128)  # several chunks
    assert torch.allclose(sae.W_dec.double(), expected, atol=1e-4)
    assert result["rows"] == len(x)
    assert result["error_before"] == pytest.approx(error(trained), rel=1e-3)
    assert result["error_after"] == pytest.approx(error(expected), rel=1e-3)
    assert result["error_after"] < 0.5 * result["error_before"]  # an untrained decoder: the refit is what fits
    # the SAE reconstructs its inputs better with it (in the input's units)
    with torch.no_grad():
        refitted = (sae(x) - x).pow(2).sum()
        sae.W_dec.data.copy_(trained)
        assert refitted < 0.5 * (sae(x) - x).pow(2).sum()


def test_where_latents_fire_few_times_a_refit_is_taken_only_if_it_reconstructs_held_out_rows_better(monkeypatch):
    """Under 10 firings per input (refit_check.TRUSTED_FIRINGS) a copy is refitted without every 8th row: 80 rows
    (a 24-latent SAE on 8 inputs, fitted already on 4,800) overfit it, and the SAE stays as it was to the bit;
    refitted on the 4,800 rows after its decoder moved, the checked copy reconstructs the held-out rows better
    and is taken; from 10 firings per input, nothing is checked."""
    sae, x = _sae()
    many = torch.cat([x] + [torch.relu(torch.randn(600, 8)) * 3 + torch.rand(600, 1) for _ in range(7)])
    first = refit_decoder(sae, many)  # a decoder, offsets and thresholds already fitted to this kind of row
    assert first["checked"] == 0 and first["refitted"] == 1 and first["firings_per_input"] >= 10
    trained = {name: tensor.detach().clone() for name, tensor in sae.state_dict().items()}
    few = refit_decoder(sae, x[:80])
    assert few["checked"] == 1 and few["firings_per_input"] < 10 and few["rows"] == 80
    assert few["refitted"] == 0 and few["held_out_fitted"] > few["held_out_trained"] > 0
    assert all(torch.equal(sae.state_dict()[name], tensor) for name, tensor in trained.items())
    # the held-out reading: every 8th row's error with the trained SAE, in its own units
    held = x[:80][7::8]
    sae.eval()
    with torch.no_grad():
        target = held * sae.input_scale - sae.b_dec
        error = (target - sae.encode(held) @ sae.W_dec).pow(2).sum() / target.pow(2).sum()
    assert few["held_out_trained"] == pytest.approx(float(error), rel=1e-5)
    with torch.no_grad():
        sae.W_dec.add_(0.3 * torch.randn_like(sae.W_dec))  # a decoder far from its rows' least squares
    moved = sae.W_dec.detach().clone()
    checked = refit_decoder(sae, many[:2400])
    assert checked["checked"] == 0  # 2,400 rows: over 10 per input
    sae.W_dec.data.copy_(moved)
    monkeypatch.setattr(decoder_refit.refit_check, "TRUSTED_FIRINGS", 10**9)  # every refit checked
    checked = refit_decoder(sae, many[:2400])
    assert checked["checked"] == 1 and checked["refitted"] == 1
    assert checked["held_out_fitted"] < checked["held_out_trained"] and not torch.equal(sae.W_dec, moved)


def test_each_chunk_takes_the_cheapest_of_the_three_sums(monkeypatch):
    """On a CPU, with 64 latents (costs in dense multiply-adds: 64 x 64 = 4,096 per row densely; 1,000 per pair;
    8 x 64 = 512 per active entry plus 400 x 4,096 per chunk for the sparse codes times the dense ones)."""
    taken = []
    monkeypatch.setattr(decoder_refit.RefitStatistics, "_add_pairs", lambda self, codes, *rest: taken.append("pairs"))
    monkeypatch.setattr(torch.sparse, "mm", lambda a, b: taken.append("sparse") or torch.zeros(a.shape[0], b.shape[1]))
    statistics = decoder_refit.RefitStatistics(64, 8, "cpu")
    one_each = torch.zeros(10, 64)
    one_each[torch.arange(10), torch.arange(10)] = 1.0
    statistics.add(one_each, torch.randn(10, 8))  # 10,000 in pairs, 40,960 dense, 1,643,520 sparse
    assert taken == ["pairs"] and float(statistics.gram.abs().sum()) == 0  # the pairs' path (stubbed here)
    statistics.add(torch.rand(10, 64) + 0.1, torch.randn(10, 8))  # every latent: 20,800,000 in pairs
    assert taken == ["pairs"] and float(statistics.gram.abs().sum()) > 0  # the dense products
    half = torch.zeros(1000, 64)
    half[:, :20] = 1.0  # 210 pairs a row: 210,000,000 in pairs, 4,096,000 dense, 11,878,400 sparse
    assert decoder_refit.sums_path(half.sum(1), 64) == "dense"
    assert decoder_refit.sums_path(torch.full((100,), 2), 64) == "pairs"  # 300,000; 409,600 dense, 1,740,800 sparse
    assert decoder_refit.sums_path(torch.full((100,), 3), 64) == "dense"  # 600,000 in pairs
    # wider: 4,096 latents at 30 a row, 4,096 rows: pairs 1.9e9, sparse 1.07e10, dense 6.9e10
    assert decoder_refit.sums_path(torch.full((4096,), 30), 4096) == "pairs"
    # 512 latents at 30 a row: pairs 1.9e9, sparse 6.1e8, dense 1.07e9
    assert decoder_refit.sums_path(torch.full((4096,), 30), 512) == "sparse"
    statistics = decoder_refit.RefitStatistics(512, 8, "cpu", offsets=True)
    codes = torch.zeros(4096, 512)
    codes[:, :30] = 1.0
    statistics.add(codes, torch.randn(4096, 8), codes)
    assert taken == ["pairs"] + ["sparse"] * 5  # each of the five sums


def test_the_sums_of_each_row_s_active_latents_are_the_dense_sums(monkeypatch):
    """Rows of 0 to 12 active latents of 64 and one of all 64 (some rows silent, some firings with a code of 0
    or below): the sparse products (taken on a CPU where cheaper) add up to the dense ones, the gates' sums
    too; float32 codes' dense products (float32 per chunk) to float32's rounding."""
    torch.manual_seed(1)
    gates = (torch.rand(200, 64) < torch.rand(200, 1) * 0.2).double()
    gates[:5] = 0
    gates[130] = 1  # every latent of the second chunk's row fires: each pair of it, the last latent's included
    codes = (torch.rand(200, 64) - 0.1) * gates
    codes[7, gates[7].nonzero()[:1, 0]] = 0  # fires with u = 0
    targets = torch.randn(200, 16)
    sums = {}
    for path in ("pairs", "sparse", "dense"):  # every chunk on one path
        monkeypatch.setattr(decoder_refit, "sums_path", lambda per_row, d_sae, path=path: path)
        statistics = decoder_refit.RefitStatistics(64, 16, "cpu", offsets=True)
        statistics.add(codes[:120], targets[:120], gates[:120])
        statistics.add(codes[120:], targets[120:], gates[120:])
        sums[path] = statistics
    dense = sums["dense"]
    expected, t = codes.double(), targets.double()
    assert torch.allclose(dense.gram, expected.T @ expected, atol=1e-10)
    assert torch.allclose(dense.gate_code, gates.T @ expected, atol=1e-10)
    assert torch.allclose(dense.gate_gram, gates.T @ gates, atol=1e-10)
    assert torch.allclose(dense.gate_cross, gates.T @ t, atol=1e-10)
    for path in ("pairs", "sparse"):
        for name in ("gram", "cross", "gate_gram", "gate_code", "gate_cross"):
            assert torch.allclose(getattr(sums[path], name), getattr(dense, name), atol=1e-10), (path, name)
        assert float(sums[path].rows) == 200 and float(sums[path].energy) == pytest.approx(float(t.pow(2).sum()))
    # float32 codes, dense (as the loop left the path): each chunk's products in float32, summed in float64
    single = decoder_refit.RefitStatistics(64, 16, "cpu", offsets=True)
    single.add(codes.float(), targets.float(), gates.float())
    assert single.gram.dtype == torch.float64 and not torch.equal(single.gram, dense.gram)
    for name in ("gram", "cross", "gate_gram", "gate_code", "gate_cross"):
        assert torch.allclose(getattr(single, name), getattr(dense, name), rtol=1e-5, atol=1e-5), name


def test_the_offsets_lower_the_error_below_the_decoder_alone_and_as_far_as_a_generic_optimiser(monkeypatch):
    """Against the decoder-only refit and against L-BFGS on the offsets (the decoder solved exactly for
    each, written out on the rows): the refit's error is lower than the first and no higher than the
    second; every offset is at or above its bias; the result reports the error the SAE now has."""
    monkeypatch.setattr(decoder_refit, "RIDGE", 1e-9)  # the plain least-squares problem
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 0)  # on the trained thresholds
    sae, x = _sae()
    alone, _ = _sae()
    sae.eval()
    with torch.no_grad():
        target = x.double() * float(sae.input_scale) - sae.b_dec.double()
        u, hidden_pre = sae.encode_with_hidden_pre(x)
        gates, u, bias = (hidden_pre > 0).double(), u.double(), sae.b_enc.double()
    fires = gates.sum(0) > 0
    offset = torch.zeros(24, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([offset], max_iter=1000, tolerance_grad=1e-12, tolerance_change=1e-16,
                                  history_size=50, line_search_fn="strong_wolfe")

    def error() -> torch.Tensor:
        optimiser.zero_grad()
        codes = (u + gates * torch.maximum(offset, bias))[:, fires]
        decoder = torch.linalg.solve(codes.T @ codes, codes.T @ target)
        value = (target - codes @ decoder).pow(2).sum() / target.pow(2).sum()
        value.backward()
        return value

    for _ in range(5):
        optimiser.step(error)
    monkeypatch.setattr(decoder_refit, "OFFSET_STEPS", 0)
    refit_decoder(alone, x)
    monkeypatch.setattr(decoder_refit, "OFFSET_STEPS", 10)  # this untrained SAE takes more than the default 5
    result = refit_decoder(sae, x)
    assert alone.b_act is None and sae.b_act is not None and not sae.b_act.requires_grad
    c = sae.b_act.detach().double()
    assert (c >= bias - 1e-7).all() and (c.abs() > 1e-2).sum() > 10  # offsets moved, none under its bias
    assert result["error_after"] == pytest.approx(squared_error(sae, x), rel=1e-4)
    assert result["error_after"] < squared_error(alone, x) - 2e-3
    assert result["error_after"] <= float(error()) + 1e-6


def test_the_sae_with_fitted_offsets_is_sae_lens_s_jumprelu_and_its_state_loads_into_a_new_sae():
    sae, x = _sae()
    refit_decoder(sae, x)
    sae.eval()
    with torch.no_grad():
        inference = sae.to_inference_sae()
        assert torch.allclose(inference.encode(x), sae.encode(x), atol=1e-5)
        assert torch.allclose(inference(x), sae(x), atol=1e-5)
    fresh = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=24, n_groups=2, activation_bias=False))
    assert fresh.b_act is None
    fresh.load_state_dict(sae.state_dict())
    assert torch.equal(fresh.b_act, sae.b_act) and torch.equal(fresh.W_dec, sae.W_dec)
    unset = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=24, n_groups=2))  # no hook: offsets off, then taken
    unset.load_state_dict(sae.state_dict())
    assert torch.equal(unset.b_act, sae.b_act) and not unset.b_act.requires_grad and unset.cfg.activation_bias is False


def test_a_latent_that_never_fires_keeps_its_trained_row_and_the_sae_stays_in_training_mode():
    sae, x = _sae()
    with torch.no_grad():
        sae.b_enc[3] = -1e6  # never fires
    sae.train()
    trained = sae.W_dec.detach().clone()
    refit_decoder(sae, x)
    assert torch.equal(sae.W_dec[3], trained[3])
    assert not torch.allclose(sae.W_dec, trained)
    assert sae.training and sae.bias_adaptation.n_samples.item() == 0  # no controller statistics were taken


def test_sums_all_reduced_over_ranks_give_the_one_process_decoder():
    """Two ranks holding the same rows: every sum doubles, lambda with them, and the solution (decoder and
    offsets) is the same."""
    sae, x = _sae()
    twice, _ = _sae()
    twice.reduce_window_statistics = lambda statistics: statistics.reduce_statistics(lambda t, op: t.mul_(2))
    one = refit_decoder(sae, x)
    two = refit_decoder(twice, x)
    assert two["rows"] == 2 * one["rows"]
    assert torch.allclose(twice.W_dec, sae.W_dec, atol=1e-5) and torch.allclose(twice.b_act, sae.b_act, atol=1e-6)


def test_it_is_on_with_find_l0_off_with_the_paper_s_rule_and_solves_a_wide_sae_without_dense_sums(monkeypatch):
    assert GBAOptions().gba_options()["decoder_refit"] is True
    assert GBAOptions(find_l0=False).gba_options()["decoder_refit"] is False
    assert GBAOptions(target_l0=8.0).gba_options()["decoder_refit"] is True  # the defaults told their level
    assert GBAOptions(target_l0=8.0, gating="relu").gba_options()["decoder_refit"] is False
    assert GBAOptions(find_l0=False, decoder_refit=True).gba_options()["decoder_refit"] is True
    assert GBATrainingSAEConfig(d_in=4, d_sae=8, n_groups=2).decoder_refit is True  # resolved in the SAE's config
    assert OPTIONS_ADDED_LATER["decoder_refit"] is False  # runs recorded before it resume without it
    torch.manual_seed(0)
    wide = GBATrainingSAE(GBATrainingSAEConfig(d_in=4, d_sae=MAX_LATENTS + 10, n_groups=2))
    x = torch.relu(torch.randn(2000, 4)) + 0.1
    wide.initialize_from_batch(x)
    with torch.no_grad():  # thresholds at which each latent fires on about 1 row in 2,000 (L0 about 4)
        wide.b_enc.copy_(-torch.quantile(wide.pre_activations(x), 1 - 1 / 2000, dim=0))
        wide.W_dec.mul_(0.1)
    trained = wide.W_dec.detach().clone()
    monkeypatch.setattr(decoder_refit, "RefitStatistics", None)  # no d_sae x d_sae sums are built
    monkeypatch.setattr(decoder_refit.refit_check, "TRUSTED_FIRINGS", 0.0)  # refitted unchecked on few firings
    result = refit_decoder(wide, x)
    assert result["refitted"] == 1 and result["error_after"] < result["error_before"]
    assert not torch.equal(wide.W_dec, trained) and wide.b_act is not None


def test_fewer_rows_are_kept_of_a_wide_input_and_of_a_short_run():
    assert rows_to_keep(10**9, 128) == decoder_refit.ROWS
    assert rows_to_keep(10**9, 4096) == decoder_refit.MAX_ROW_BYTES // (4 * 4096) < decoder_refit.ROWS
    assert rows_to_keep(5_000, 128) == 5_000  # a short run: every row
