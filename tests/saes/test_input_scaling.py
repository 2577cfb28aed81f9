"""``input_norm="per_token"``: each input divided by its own norm before the encoder reads it (opt-in).

Which latents fire does not depend on an input's scale and the reconstruction scales with it; the
SAE exports as SAELens's ``constant_norm_rescale``; the own-code reading of ``find_l0`` re-encodes
in the normalised units; and on data whose inputs are scaled by a random factor each (a scale
mixture, as a language model's tokens are in part) it fires as many latents on the smallest inputs
as on the largest, where the default's thresholds leave the smallest unreconstructed."""

from __future__ import annotations

import pytest
import torch

from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.gba_options import OPTIONS_ADDED_LATER, GBAOptions
from gba_lens.synthetic.metrics import feature_recovery_rate
from gba_lens.synthetic.paper_model import SparseMixtureModel, small_model_config
from gba_lens.training.data import SeededBatches
from gba_lens.training.methods import build_sae
from gba_lens.training.train import TrainConfig, train_sae


def _inputs(n: int, d_in: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, d_in, generator=g)) * 3 + torch.linspace(0, 1, d_in)


def _trained(step_input, **options) -> GBATrainingSAE:
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=12, d_sae=48, n_groups=4, input_norm="per_token", **options))
    for step in range(20):
        sae.training_forward_pass(step_input(_inputs(256, 12, seed=step), step=step))
    return sae.eval()


def test_the_code_ignores_an_inputs_scale_and_the_reconstruction_follows_it(step_input):
    sae = _trained(step_input)
    x = _inputs(200, 12, seed=99)
    scales = torch.exp(torch.linspace(-2, 2, 200))[:, None]
    with torch.no_grad():
        z = sae.encode(x)
        recons = sae.decode(z)
        z_scaled = sae.encode(x * scales)
        recons_scaled = sae.decode(z_scaled)
    assert 0.02 < (z > 0).float().mean() < 0.9  # the gate is doing something
    assert torch.equal(z_scaled > 0, z > 0)
    assert torch.allclose(z_scaled, z, atol=1e-5)
    assert torch.allclose(recons_scaled, recons * scales, rtol=1e-4, atol=1e-4)
    # not so under the default: there the same inputs scaled fire other latents
    default = build_sae("gba", 12, 48, n_groups=4)
    default.training_forward_pass(step_input(_inputs(256, 12)))
    with torch.no_grad():
        assert not torch.equal(default.eval().encode(x * scales) > 0, default.encode(x) > 0)


def test_exported_as_saelens_constant_norm_rescale_with_equal_outputs(step_input):
    sae = _trained(step_input, activation_bias=True)
    x = _inputs(300, 12, seed=7) * torch.exp(torch.randn(300, 1))
    inference = sae.to_inference_sae()
    assert inference.cfg.normalize_activations == "constant_norm_rescale"
    with torch.no_grad():
        z = sae.encode(x)
        recons = sae.decode(z)
        z_plain = inference.encode(x)
        assert torch.allclose(z_plain, z, atol=1e-5)
        assert torch.allclose(inference.decode(z_plain), recons, rtol=1e-4, atol=1e-4)


def test_the_own_code_is_re_encoded_in_the_normalised_units(step_input):
    """The batch's code decoded, plus each row's error, is the batch itself: re-encoded it gives the
    batch's pre-activations (rows of many scales, so a factor applied twice or not at all shows)."""
    sae = _trained(step_input).train()
    x = _inputs(64, 12, seed=5) * torch.exp(torch.linspace(-1.5, 1.5, 64))[:, None]
    bias = sae.b_enc.detach().clone()  # the step's rule moves it after the forward pass
    out = sae.training_forward_pass(step_input(x, step=20))
    rows = 40
    error = sae._per_input(out.sae_in - out.sae_out.detach())[:rows]  # each row divided by its input's norm
    again = sae._reencode(out.feature_acts.detach()[:rows], error) - sae.b_enc
    assert torch.allclose(again, out.hidden_pre.detach()[:rows] - bias, atol=1e-4)
    assert sae._token_factor.shape == (64, 1)  # the batch's factors are kept for its other readings


def test_decoding_codes_of_other_inputs_than_the_last_encoded_is_refused(step_input):
    """The reconstruction is scaled back by each input's norm, which only the inputs encoded give."""
    sae = _trained(step_input)
    with torch.no_grad():
        z = sae.encode(_inputs(10, 12))
        sae.encode(_inputs(1, 12))  # a single input since: its norm would scale all ten
        with pytest.raises(ValueError, match=r"decode the codes of the inputs last encoded \(codes of shape \(10,\), "
                                             r"inputs of shape \(1,\) encoded\)"):
            sae.decode(z)
        fresh = GBATrainingSAE(GBATrainingSAEConfig(d_in=12, d_sae=48, n_groups=4, input_norm="per_token"))
        with pytest.raises(ValueError, match="no inputs encoded"):
            fresh.decode(z)


def test_an_option_that_is_refused_or_misspelt_says_so_in_one_line():
    assert OPTIONS_ADDED_LATER["input_norm"] == "unit_mean"  # runs recorded before the option resume as they were
    with pytest.raises(ValueError, match="input_norm=per_token needs normalize_activations='none'"):
        GBATrainingSAEConfig(d_in=8, d_sae=20, input_norm="per_token", normalize_activations="expected_average_only_in")
    with pytest.raises(ValueError, match="input_norm='per_token' needs reshape_activations='none', got 'hook_z'"):
        GBATrainingSAEConfig(d_in=8, d_sae=20, input_norm="per_token", reshape_activations="hook_z")
    with pytest.raises(ValueError, match="input_norm must be one of unit_mean, per_token, none, got 'per-token'"):
        GBAOptions(input_norm="per-token").check_gba_options()  # type: ignore[arg-type]


def test_on_a_scale_mixture_it_fires_the_true_l0_at_every_scale():
    """The recovery test's small model (two features per input) with each input scaled by a random
    factor in [0.3, 3.3]: the default's thresholds, set in the input's units, fire almost nothing on
    the smallest fifth of the inputs and leave most of them in the error; divided by their norms they
    fire about the true L0 at every scale."""
    model = SparseMixtureModel(small_model_config(0))

    def sample(n: int) -> torch.Tensor:
        return model.sample(n) * torch.exp(torch.empty(n, 1).uniform_(-1.2, 1.2))

    found = {}
    for input_norm in ("unit_mean", "per_token"):
        torch.manual_seed(0)
        sae = build_sae("gba", 24, 128, input_norm=input_norm)
        train_sae(sae, SeededBatches(sample, 256, seed=0),
                  TrainConfig(total_samples=150_000, batch_size=256, lr=3e-3, lr_decay_steps=175))
        torch.manual_seed(99)
        x = sample(5_000)
        with torch.no_grad():
            z = sae.eval().encode(x)
            relative_error = (sae.decode(z) - x).pow(2).sum(-1) / x.pow(2).sum(-1)
        norm = x.norm(dim=-1)
        smallest, largest = norm < norm.quantile(0.2), norm > norm.quantile(0.8)
        l0 = (z > 0).float().sum(-1)
        found[input_norm] = (float(l0[smallest].mean()), float(l0[largest].mean()),
                             float(relative_error[smallest].mean()),
                             feature_recovery_rate(sae.W_dec, model.feature_dict.feature_vectors, 0.8))
    small_l0, large_l0, small_error, recovered = found["per_token"]
    # The true L0 is 2; per_token measured 2.36 / 2.32 (seed 0; seed 1 2.33 / 2.30). The window is
    # the claim "an input's scale no longer sets its L0": the default, whose thresholds are in the
    # input's units, falls outside it at both ends (0.03 on the smallest fifth, 4.18 on the largest,
    # seed 0), and it leaves room for the +31% that the small model's L0 ends at under per_token.
    assert 1.5 < small_l0 < 3.5 and 1.5 < large_l0 < 3.5
    assert small_error < 0.2 and recovered >= 0.9
    default_small_l0, default_large_l0, default_small_error, _ = found["unit_mean"]
    assert default_small_l0 < 0.5 < 3 < default_large_l0
    assert default_small_error > 0.8


def test_every_rule_reads_the_same_batch_at_any_scale_of_its_inputs(step_input, monkeypatch):
    """Each input of a batch scaled by its own factor: the bias rule, the valley histograms and
    find_l0's check (its own code with the error of other rows, read at every check here) see the
    same normalised batch, so the thresholds and every statistic end equal."""
    from gba_lens.saes import coactivation

    monkeypatch.setattr(coactivation, "OWN_CODE_AFTER", -1.0)  # the own code at every check from the second
    scales = torch.exp(torch.empty(256, 1).uniform_(-1.5, 1.5, generator=torch.Generator().manual_seed(4)))
    saes = []
    for scaled in (False, True):
        torch.manual_seed(0)
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=12, d_sae=48, n_groups=4, input_norm="per_token"))
        sae.training_horizon = 100
        with torch.no_grad():  # forward passes only: the weights stay where they are
            for step in range(coactivation.CHECK_EVERY + 1):
                x = _inputs(256, 12, seed=step)
                sae.training_forward_pass(step_input(x * scales if scaled else x, step=step))
        saes.append(sae)
    check = saes[0].bias_adaptation.coactivation
    assert check.own_sums[1] > 0  # the own code was read
    for (name, a), b in zip(saes[0].state_dict().items(), saes[1].state_dict().values()):
        if name.startswith(("bias_adaptation.", "valley_thresholds.")) or name == "b_enc":
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
    assert torch.allclose(saes[0].bias_adaptation.coactivation.own_sums, saes[1].bias_adaptation.coactivation.own_sums,
                          rtol=1e-4)
