"""scripts/refit_paths.py's two refits of one SAE (docs/experiments/prior_free.md, fifty-third step)."""

import pytest
import torch

from gba_lens.saes import decoder_refit, sparse_refit
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig


def test_both_ways_refit_a_copy_to_nearly_one_error_and_count_the_sparse_way_s_iterations(script):
    paths = script("refit_paths")
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=24, n_groups=2))
    x = torch.relu(torch.randn(600, 8)) * 3 + torch.rand(600, 1)
    sae.initialize_from_batch(x)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.3, -0.05)
    trained = sae.W_dec.detach().clone()
    dense, sparse = paths.refit_both(sae, x, reallocations=0)
    assert (dense["way"], sparse["way"]) == ("dense", "sparse")
    assert torch.equal(sae.W_dec, trained) and sae.b_act is None  # the copies were refitted
    assert dense["solves"] == 0 and dense["products"] == []
    # one decoder solve, then per Gauss-Newton step one joint solve and one decoder solve (or more, halved)
    assert sparse["solves"] >= 3 and sparse["solves"] % 2 == 1 and min(sparse["products"]) >= 2
    assert sparse["error_before"] == pytest.approx(dense["error_before"], rel=1e-4)
    assert sparse["error_after"] == pytest.approx(dense["error_after"], rel=0.01)
    assert sparse["error_after"] < 0.5 * sparse["error_before"]
    assert not torch.equal(sparse["sae"].W_dec, dense["sae"].W_dec)  # two solvers
    assert decoder_refit.MAX_LATENTS == 8192 and decoder_refit.REALLOCATIONS == 2  # restored
    assert sparse_refit.conjugate_gradients.__name__ == "conjugate_gradients"
    (alone,) = paths.refit_both(sae, x, reallocations=0, ways=("sparse",))  # a width the dense sums cannot take
    assert alone["way"] == "sparse" and alone["error_after"] == sparse["error_after"]
