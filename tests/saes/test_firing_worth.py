"""``firing_worth``: targets scaled down for latents whose firings reconstruct little (gba_lens/saes/firing_worth.py)."""

import json
import runpy
import warnings
from pathlib import Path

import pytest
import torch

from gba_lens.saes import firing_worth
from gba_lens.saes.firing_worth import FiringWorth
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.data import TensorBatches
from gba_lens.saes.gba_options import DEFAULT_FIRING_WORTH
from gba_lens.training.methods import build_sae
from gba_lens.training.train import TrainConfig, train_sae


def _code(rows: int, d_sae: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    code = torch.rand(rows, d_sae, generator=generator)
    return code * (torch.rand(rows, d_sae, generator=generator) < 0.3)


def test_a_firing_is_worth_the_growth_of_the_squared_error_without_it():
    torch.manual_seed(0)
    code, decoder, inputs = _code(20, 6), torch.randn(6, 5), torch.randn(20, 5)
    error = inputs - code @ decoder
    expected = torch.zeros(2, 6)
    for row in range(20):
        for latent in code[row].nonzero().flatten().tolist():
            without = code[row].clone()
            without[latent] = 0
            grown = (inputs[row] - without @ decoder).pow(2).sum() - error[row].pow(2).sum()
            expected[0, latent] += grown
            expected[1, latent] += 1
    worth = FiringWorth(6, 0.3)
    worth.observe(code, decoder, error)
    assert torch.allclose(worth.sums, expected, atol=1e-4)
    worth.observe(code.to_sparse(), decoder, error)  # the sparse step's code gives the same sums
    assert torch.allclose(worth.sums, expected, atol=1e-4)


def test_a_measurement_reads_only_the_first_rows(monkeypatch):
    monkeypatch.setattr(firing_worth, "MAX_ROWS", 8)
    torch.manual_seed(0)
    code, decoder, error = _code(20, 6), torch.randn(6, 5), torch.randn(20, 5)
    worth, first = FiringWorth(6, 0.3), FiringWorth(6, 0.3)
    worth.observe(code, decoder, error)
    first.observe(code[:8], decoder, error[:8])
    assert torch.equal(worth.sums, first.sums)
    worth.observe(code.to_sparse(), decoder, error)
    assert torch.allclose(worth.sums, first.sums)


def test_a_measurement_reads_the_decoder_rows_of_the_latents_that_fired_and_no_other():
    """A latent that did not fire adds nothing, so its decoder row is not read (at tens of thousands of
    latents a pass over the whole decoder costs more than the firings' products)."""
    torch.manual_seed(0)
    code, decoder, error = _code(20, 6), torch.randn(6, 5), torch.randn(20, 5)
    code[:, [1, 4]] = 0
    unread = decoder.clone()
    unread[[1, 4]] = float("nan")
    for acts in (code, code.to_sparse()):
        expected, worth = FiringWorth(6, 0.3), FiringWorth(6, 0.3)
        expected.observe(acts, decoder, error)
        worth.observe(acts, unread, error)
        assert torch.equal(worth.sums, expected.sums)
        assert expected.sums[:, [1, 4]].eq(0).all() and expected.sums[1].sum() == (code != 0).sum()


def test_latents_worth_under_the_share_of_the_average_firing_have_their_targets_scaled_down():
    worth = FiringWorth(4, 0.5)
    # per firing 4, 2, 0.5 and no firing; the average firing's worth (4 * 3 + 2 * 1 + 0.5 * 4) / 8 = 2
    worth.sums.copy_(torch.tensor([[12.0, 2.0, 2.0, 0.0], [3.0, 1.0, 4.0, 0.0]]))
    worth.update()
    assert worth.average.item() == pytest.approx(2.0)
    assert torch.allclose(worth.multiplier, torch.tensor([1.0, 1.0, 0.5, 1.0]))
    # the next measurement moves each average by BETA of the difference; a latent silent at it keeps its reading
    worth.sums.copy_(torch.tensor([[4.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    worth.update()
    beta = firing_worth.BETA
    assert worth.average.item() == pytest.approx(2.0 + beta * (4.0 - 2.0))
    assert worth.worth.tolist() == pytest.approx([4.0, 2.0, 0.5, 0.0])
    assert worth.measured.tolist() == [True, True, True, False]
    assert worth.multiplier[2].item() == pytest.approx(0.5 / (0.5 * worth.average.item()))
    # a firing worth nothing (or less) is held at FLOOR, not silenced outright
    worth.sums.copy_(torch.tensor([[-5.0, 20.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]]))
    for _ in range(50):
        worth.update()
    assert worth.multiplier[0].item() == pytest.approx(firing_worth.FLOOR)


def test_no_target_is_scaled_while_the_average_firing_is_worth_nothing_or_less():
    # a new SAE's firings overshoot: dropping any one lowers the error, and nothing is a reference yet
    worth = FiringWorth(3, 0.3)
    worth.sums.copy_(torch.tensor([[-3.0, -1.0, 1.0], [1.0, 1.0, 1.0]]))
    worth.update()
    assert worth.average.item() < 0 and torch.equal(worth.multiplier, torch.ones(3))


def test_a_measurement_with_no_firing_changes_nothing():
    worth = FiringWorth(3, 0.3)
    worth.update()
    assert worth.checks.item() == 0 and torch.equal(worth.multiplier, torch.ones(3))


def test_the_rule_holds_each_neuron_to_its_scaled_target():
    sae = build_sae("gba", 8, 16, firing_worth=0.3)
    controller = sae.bias_adaptation
    controller.firing_worth.multiplier[:4] = 0.25
    assert torch.equal(controller.neuron_targets[:4], 0.25 * controller.target[:4])
    assert torch.equal(controller.neuron_targets[4:], controller.target[4:])
    assert build_sae("gba", 8, 16).bias_adaptation.firing_worth.share == DEFAULT_FIRING_WORTH  # with data starts
    assert build_sae("gba", 8, 16, encoder_init="random").bias_adaptation.firing_worth is None
    assert build_sae("gba", 8, 16, find_l0=False).bias_adaptation.firing_worth is None  # the paper's rule
    assert "bias_adaptation.firing_worth.multiplier" in sae.state_dict()  # checkpoints carry it


def test_the_sae_measures_its_own_step_every_check_logs_it_and_exports_without_it(step_input):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, firing_worth=1.0))
    sae.training_horizon = firing_worth.CHECK_EVERY  # the first check lies past START of this run
    worth = sae.bias_adaptation.firing_worth
    x = torch.relu(torch.randn(256, 8, generator=torch.Generator().manual_seed(1))) * 2
    sae.training_forward_pass(step_input(x, 1))
    assert worth.checks.item() == 0  # not a measurement step
    out = sae.training_forward_pass(step_input(x, firing_worth.CHECK_EVERY))
    assert worth.checks.item() == 1 and worth.measured.any()
    # the sums are the step's own code against its error, in the units the decoder reconstructs
    expected = FiringWorth(32, 1.0)
    expected.observe(out.feature_acts, sae.W_dec, (x - out.sae_out.detach()) * sae.input_scale)
    assert torch.allclose(worth.sums, expected.sums, rtol=1e-4, atol=1e-5)
    assert out.metrics["gba/worth_scaled_fraction"] == (worth.multiplier < 1).float().mean()
    assert out.metrics["gba/worth_average"] == worth.average
    assert not [key for key in sae.to_inference_sae().state_dict() if "worth" in key]


def test_the_rule_measures_only_from_start_of_the_run():
    worth = FiringWorth(4, 0.5)
    assert [step for step in range(200) if worth.due(step, 100)] == [70, 80, 90, 100, 110, 120, 130, 140, 150,
                                                                    160, 170, 180, 190]
    assert [step for step in range(40) if worth.due(step, 10)] == [10, 20, 30]


def test_without_the_run_s_length_the_rule_measures_from_the_start_and_says_so_once():
    worth = FiringWorth(4, 0.5)
    with pytest.warns(UserWarning, match="firing_worth waits for 0.7 of the run, whose length"):
        assert worth.due(10, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [step for step in range(40) if worth.due(step, None)] == [10, 20, 30]


def test_gba_trainers_give_the_rule_the_run_s_length():
    sae = build_sae("gba", 8, 32)
    x = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="firing_worth")
        train_sae(sae, TensorBatches(x, 64, seed=0), TrainConfig(total_samples=64 * 40, batch_size=64, lr=3e-3))
    assert sae.training_horizon == 40
    assert sae.bias_adaptation.firing_worth.checks.item() == 1  # step 30 of 0...39 (70% of 40 = 28)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_a_share_outside_0_1_is_refused(value):
    with pytest.raises(ValueError, match="firing_worth must be in"):
        GBATrainingSAEConfig(d_in=4, d_sae=8, firing_worth=value)


def test_the_spare_latents_of_a_model_with_more_latents_than_features_fire_less(capsys, monkeypatch):
    """The small model (48 features, 128 latents) with data starts: at GBA's defaults (share 0.5 from
    0.7 of the run) the latents matched to no feature fire about half as much as without the rule
    (seeds 0-1: 0.25 / 0.56 against 0.54 / 0.96 latents per input, docs/experiments/prior_free.md,
    thirty-third step), and as many features are found. One learning rate for every weight, as measured
    there: with the encoder's faster rate late in the run (``encoder_lr_scale``, the thirty-eighth step) the
    spare latents fire less without the rule too (0.58 latents per input over the two seeds, from 1.50),
    and the rule adds nothing to that (0.62)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main = runpy.run_path(str(Path(__file__).parents[2] / "scripts" / "small_latents.py"))["main"]
    runs = {}
    for share in ("0", str(DEFAULT_FIRING_WORTH)):
        main(["--seeds", "0", "1", "--gba", "encoder_init=data", "encoder_lr_scale=1.0", f"firing_worth={share}"])
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert [line["seed"] for line in lines] == [0, 1]
        runs[share] = {name: sum(line[name] for line in lines) for name in ("l0", "features_matched")}
        runs[share]["unmatched"] = sum(line["unmatched"]["l0"] for line in lines)
    rule = runs[str(DEFAULT_FIRING_WORTH)]
    assert rule["unmatched"] < 0.75 * runs["0"]["unmatched"]
    assert rule["features_matched"] >= runs["0"]["features_matched"] - 2
    assert rule["l0"] < runs["0"]["l0"]
