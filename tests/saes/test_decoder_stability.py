"""The per-group decoder-stability metric: cosines against the last logging step's rows."""

import math

import pytest
import torch

from gba_lens.saes import decoder_stability
from gba_lens.saes.bias_adaptation import GroupBiasAdaptation
from gba_lens.saes.decoder_stability import DecoderStability
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig


def test_first_call_only_takes_the_snapshot_then_cosines_per_row():
    torch.manual_seed(0)
    decoder = torch.randn(6, 4)
    stability = DecoderStability(6)
    assert stability.cosines(decoder) is None
    assert torch.allclose(stability.cosines(3.0 * decoder), torch.ones(6), atol=1e-6)  # norms do not count
    turned = decoder.clone()
    turned[2] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    turned[4] = -decoder[4]
    cosine = stability.cosines(turned)
    expected = float(decoder[2, 0] / decoder[2].norm())
    assert cosine[2] == pytest.approx(expected, abs=1e-6)
    assert cosine[4] == pytest.approx(-1.0, abs=1e-6)
    assert torch.allclose(cosine[[0, 1, 3, 5]], torch.ones(4), atol=1e-6)


def test_group_means_over_a_sample_of_every_kth_row(monkeypatch):
    monkeypatch.setattr(decoder_stability, "MAX_ROWS", 4)
    stability = DecoderStability(10)  # every third row: 0, 3, 6, 9
    assert stability.rows.tolist() == [0, 3, 6, 9]
    controller = GroupBiasAdaptation(10, n_groups=2)  # groups 0 (neurons 0-4) and 1 (5-9)
    decoder = torch.eye(10)[:, :10]
    assert stability.cosines(decoder) is None
    turned = decoder.clone()
    turned[3] = (decoder[3] + decoder[7]) / math.sqrt(2)  # 45 degrees: cosine 1/sqrt(2)
    turned[6] = decoder[8]  # orthogonal: cosine 0
    turned[1] = decoder[2]  # not sampled: no effect
    means = controller.group_means(stability.cosines(turned), stability.rows)
    assert means.tolist() == pytest.approx([(1 + 1 / math.sqrt(2)) / 2, (0 + 1) / 2], abs=1e-6)


def test_logging_steps_report_each_groups_decoder_stability_from_the_second_on(step_input):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=20, n_groups=2))
    x = torch.randn(64, 8) * 3 + 1
    first = sae.training_forward_pass(step_input(x))
    assert not any(key.endswith("decoder_stability") for key in first.metrics)
    before = sae.W_dec.detach().clone()
    with torch.no_grad():
        sae.W_dec[10:] = torch.randn(10, 8)  # group 1 turns, group 0 stands still
    second = sae.training_forward_pass(step_input(x, step=1))
    assert second.metrics["gba_groups/group_0_decoder_stability"] == pytest.approx(1.0, abs=1e-6)
    unit = torch.nn.functional.normalize
    expected = float((unit(before[10:], dim=1) * unit(sae.W_dec[10:].detach(), dim=1)).sum(1).mean())
    assert second.metrics["gba_groups/group_1_decoder_stability"] == pytest.approx(expected, abs=1e-5)
    assert second.metrics["gba_groups/group_1_decoder_stability"] < 0.5
    assert "decoder_stability" not in "".join(sae.state_dict())  # a metric, not saved with checkpoints
