"""The SAELens baselines in the shared harness, and the settings the comparison rows use."""

import pytest
import torch
from sae_lens import SAE

from gba_lens.experiments import paper_toy_methods, zipf_methods
from gba_lens.training.methods import METHODS, build_sae


@pytest.mark.parametrize("method, params", [
    ("gba", {}), ("ba", {"target": 0.05}), ("topk", {"k": 4}), ("batchtopk", {"k": 4.0}),
    ("l1", {"l1_coefficient": 0.5}), ("jumprelu", {"l0_coefficient": 0.1}),
])
def test_every_method_trains_and_exports_to_saelens(tmp_path, train_tiny, method, params):
    sae = train_tiny(method, **params)
    sae.eval()
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    x = torch.relu(torch.randn(16, 8))
    if method != "batchtopk":  # BatchTopK's saved JumpReLU threshold differs from its training gate by design
        assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-5)
    assert set(METHODS) >= {method}


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method"):
        build_sae("sparse-magic", 8, 16)


def _selection_before_and_after_large_decoder_norms(sae, x):
    """Active latents of ``x`` before and after a few latents get large decoder norms."""
    before = sae.encode_with_hidden_pre(x)[0] != 0
    with torch.no_grad():
        sae.W_dec[:8] *= 50.0
    return before, sae.encode_with_hidden_pre(x)[0] != 0


@pytest.mark.parametrize("method, params", [
    ("gba", {}), ("topk", {"k": 4}), ("batchtopk", {"k": 4.0}), ("l1", {"l1_coefficient": 0.5}),
    ("jumprelu", {"l0_coefficient": 0.1}),
])
def test_zero_pre_bias_keeps_b_dec_at_zero_while_the_rest_trains(train_tiny, method, params):
    """The paper-toy rows run without a pre-bias: b_dec stays exactly 0 through training (GBA
    does not centre its inputs), while the other weights do train."""
    torch.manual_seed(0)
    w_enc = build_sae(method, 8, 32, zero_pre_bias=True, **params).W_enc.detach().clone()
    sae = train_tiny(method, steps=20, offset=3.0, zero_pre_bias=True, **params)  # a large offset
    assert torch.count_nonzero(sae.b_dec) == 0
    assert not torch.allclose(sae.W_enc, w_enc)
    trained = train_tiny(method, steps=20, offset=3.0, **params)
    assert torch.count_nonzero(trained.b_dec) > 0  # without the option b_dec does move


def test_paper_toy_rows_have_no_pre_bias_and_cover_f():
    specs = paper_toy_methods()
    assert all(spec.params.get("zero_pre_bias") is True for spec in specs)
    (covering,) = [s for s in specs if s.role == "gba_covering"]
    assert covering.label.startswith("GBA, range covers f")
    assert covering.params["highest_target"] > 11.5 / 128 > covering.params["lowest_target"]
    assert [s.label for s in paper_toy_methods((0.1, 0.001))][3] == "GBA, range covers f (0.1 … 0.001)"


def test_toy_and_zipf_topk_baselines_select_on_plain_pre_activations():
    """The paper's TopK picks the top k of W_enc x + b_enc; SAELens's default also weighs each
    latent by its decoder norm. The comparison rows must not depend on decoder norms."""
    specs = [s for s in paper_toy_methods() if s.method == "topk"]
    specs += [s for s in zipf_methods(true_l0=4.0) if s.method == "batchtopk"]
    assert len(specs) == 4
    x = torch.randn(64, 16)
    for spec in specs:
        torch.manual_seed(0)
        before, after = _selection_before_and_after_large_decoder_norms(
            build_sae(spec.method, 16, 64, **{**spec.params, "k": 4}), x)
        assert torch.equal(after, before), spec.label
    # SAELens's default selection does move to the large-norm latents (what the rows avoid).
    torch.manual_seed(0)
    before, after = _selection_before_and_after_large_decoder_norms(build_sae("topk", 16, 64, k=4), x)
    assert after[:, :8].sum() > before[:, :8].sum()
