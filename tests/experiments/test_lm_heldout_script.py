"""scripts/lm_heldout.py's readings of a trained SAE (docs/experiments/prior_free.md, thirty-eighth step)."""

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig


def identity_jumprelu(thresholds: list[float]) -> JumpReLUSAE:
    """A JumpReLU SAE whose latent m passes input coordinate m above its threshold."""
    d = len(thresholds)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=d))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.copy_(torch.tensor(thresholds))
    return sae.eval()


def test_margins_read_each_latents_lowest_firings_and_best_silent_inputs(script):
    heldout = script("lm_heldout")
    thresholds = [0.05, 0.5, 0.93, 0.985]
    sae = identity_jumprelu(thresholds)
    acts = torch.rand(4000, 4, generator=torch.Generator().manual_seed(0))
    (reading,) = heldout.margins([sae], ["sae"], acts)["margins"].values()

    # With orthonormal rows the residual along row m is what latent m leaves of coordinate m: a firing
    # z = x_m leaves nothing, so removing it costs z^2; a silent x_m is all residual, so firing it gains
    # 2 x_m^2 - x_m^2 = x_m^2.
    fired = acts > torch.tensor(thresholds)
    frequency = fired.float().mean(0)
    expected = []
    for m in range(4):
        n = max(5, int(0.1 * int(fired[:, m].sum())))
        lowest = acts[fired[:, m], m].sort().values[:n]
        best_silent = acts[~fired[:, m], m].sort(descending=True).values[:n]
        expected.append((float(lowest.pow(2).mean()), float(best_silent.pow(2).mean())))

    assert reading["l0"] == pytest.approx(float(frequency.sum()), abs=1e-3)
    bands = {tuple(b["frequency"]): b for b in reading["bands"]}
    assert [b["latents"] for b in reading["bands"]] == [2, 1, 1]  # 0.95 and 0.5; 0.07; 0.015
    assert sum(b["l0"] for b in reading["bands"]) == pytest.approx(reading["l0"], abs=2e-3)
    assert bands[(0.05, 0.1)]["loss_at_threshold"] == pytest.approx(expected[2][0], abs=1e-3)
    assert bands[(0.05, 0.1)]["gain_below"] == pytest.approx(expected[2][1], abs=1e-3)
    assert bands[(0.01, 0.02)]["loss_at_threshold"] == pytest.approx(expected[3][0], abs=1e-3)
    top = bands[(0.1, 1.0)]  # torch's median of two values is the lower one
    assert top["loss_at_threshold"] == pytest.approx(min(expected[0][0], expected[1][0]), abs=1e-3)
    assert top["gain_below"] == pytest.approx(min(expected[0][1], expected[1][1]), abs=1e-3)
    # worth per firing against the average firing's: a firing is worth z^2 here
    worth = acts.pow(2) * fired
    average = worth.sum() / fired.sum()
    assert bands[(0.01, 0.02)]["worth_per_firing"] == pytest.approx(
        float(worth[:, 3].sum() / fired[:, 3].sum() / average), abs=1e-3)


def test_a_latent_with_too_few_firings_has_no_threshold_reading(script):
    heldout = script("lm_heldout")
    acts = torch.rand(1000, 2, generator=torch.Generator().manual_seed(1))
    (reading,) = heldout.margins([identity_jumprelu([0.5, 0.995])], ["sae"], acts)["margins"].values()
    rare = [b for b in reading["bands"] if b["frequency"] == [0.003, 0.01]]
    assert rare and rare[0]["latents"] == 1 and rare[0]["loss_at_threshold"] is None and rare[0]["gain_below"] is None


def test_the_refitted_decoder_recovers_a_linear_code(script):
    heldout = script("lm_heldout")
    g = torch.Generator().manual_seed(2)
    codes = torch.relu(torch.randn(500, 6, generator=g))
    weights, bias = torch.randn(6, 4, generator=g), torch.randn(4, generator=g)
    fitted_weights, fitted_bias = heldout.refitted_decoder(codes, codes @ weights + bias)
    assert torch.allclose(fitted_weights, weights, atol=1e-4)
    assert torch.allclose(fitted_bias, bias, atol=1e-4)


def test_refit_without_the_training_cache_is_a_one_line_error(script, capsys):
    with pytest.raises(SystemExit):
        script("lm_heldout").main(["first", "second", "--refit"])
    assert "--refit fits the decoders on the training activations: give --train-cache" in capsys.readouterr().err


def test_a_latent_firing_on_every_token_keeps_its_lowest_firings_reading(script):
    heldout = script("lm_heldout")
    acts = torch.rand(500, 2, generator=torch.Generator().manual_seed(3)) + 0.1
    (reading,) = heldout.margins([identity_jumprelu([0.0, 0.5])], ["sae"], acts)["margins"].values()
    (band,) = reading["bands"]
    assert band["latents"] == 2
    # latent 0 has no silent input: the band's gain is latent 1's alone, its loss the lower of the two
    lowest = [acts[acts[:, m] > t, m].sort().values[:max(5, int(0.1 * int((acts[:, m] > t).sum())))].pow(2).mean()
              for m, t in enumerate((0.0, 0.5))]
    silent = acts[acts[:, 1] <= 0.5, 1].sort(descending=True).values
    assert band["gain_below"] == pytest.approx(float(silent[:max(5, int(0.1 * int((acts[:, 1] > 0.5).sum())))].pow(2).mean()), abs=1e-3)
    assert band["loss_at_threshold"] == pytest.approx(float(min(lowest)), abs=1e-3)
