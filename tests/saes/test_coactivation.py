"""``find_l0``: the co-activation ratio on dictionaries whose answer is known, the controller it
drives, and a GBA SAE that carries it through training and checkpoints."""

import pytest
import torch

from gba_lens.saes import coactivation as C
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.l0_control import FOUND_BOUND, FOUND_START, L0Control


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=-1, keepdim=True)


def _ratio(acts: torch.Tensor, decoder: torch.Tensor, step: int = 10) -> float:
    balance = C.CoactivationBalance()
    balance.observe(acts, decoder, (acts != 0).any(0), step)
    ratio = balance.ratio()
    assert ratio is not None
    return ratio


def test_latents_that_fire_independently_of_their_directions_have_ratio_one():
    gen = torch.Generator().manual_seed(0)
    decoder = torch.randn(64, 16, generator=gen)
    acts = (torch.rand(4096, 64, generator=gen) < 0.1) * torch.rand(4096, 64, generator=gen)
    assert _ratio(acts, decoder) == pytest.approx(1.0, abs=0.03)


def test_latents_that_fire_with_aligned_partners_have_ratio_above_one_and_with_orthogonal_ones_below():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(32, 16, generator=gen)
    pairs = torch.randn(32, 1, generator=gen)
    fire = (torch.rand(4096, 32, generator=gen) < 0.02).float()
    # latents 2i and 2i+1 point almost the same way and always fire together
    aligned = torch.cat([base, base + 0.3 * torch.randn(32, 16, generator=gen)])
    together = torch.cat([fire, fire], dim=1) * pairs.T.abs().repeat(1, 2)
    assert _ratio(together, aligned) > 2.0  # measured 2.50
    # 64 latents in 4 orthonormal blocks of 16; only latents of the same block fire together
    blocks = torch.cat([torch.linalg.qr(torch.randn(16, 16, generator=gen))[0] for _ in range(4)])
    block_of_row = torch.randint(0, 4, (4096,), generator=gen)
    within = (torch.rand(4096, 64, generator=gen) < 0.3) & (torch.arange(64)[None] // 16 == block_of_row[:, None])
    assert _ratio(within.float(), blocks) < 0.05


def test_dense_and_sparse_activations_give_the_same_sums_and_rows_beyond_the_limit_are_not_read():
    gen = torch.Generator().manual_seed(1)
    decoder = _unit(torch.randn(40, 8, generator=gen))
    acts = (torch.rand(50, 40, generator=gen) < 0.2) * torch.rand(50, 40, generator=gen)
    dense = torch.stack(C.coactive_alignment(*C.active_entries(acts, 30, 40), decoder, max_active=40))
    sparse = torch.stack(C.coactive_alignment(*C.active_entries(acts.to_sparse(), 30, 40), decoder, max_active=40))
    assert torch.allclose(dense, sparse)
    # by hand: every ordered pair of distinct active latents in each of the first 30 rows
    cos = (decoder @ decoder.T).abs()
    total = sum(float(cos[i, j]) for r in range(30) for i in acts[r].nonzero().flatten()
                for j in acts[r].nonzero().flatten() if i != j)
    pairs = sum(int(n) * (int(n) - 1) for n in (acts[:30] != 0).sum(1))
    assert float(dense[0]) == pytest.approx(total, rel=1e-5) and float(dense[1]) == pairs


def test_a_row_with_more_active_latents_than_the_limit_counts_its_first_ones():
    decoder = _unit(torch.eye(8) + 0.1)
    for acts in (torch.ones(1, 8), torch.ones(1, 8).to_sparse()):
        row, latent, _ = C.active_entries(acts, 10, 3)
        assert latent.tolist() == [0, 1, 2]
        total, pairs = C.coactive_alignment(row, latent, 1, decoder, max_active=3)
        assert float(pairs) == 6  # latents 0, 1, 2: three pairs, each both ways
        assert float(total) == pytest.approx(6 * float(decoder[0] @ decoder[1]))


def test_the_denominator_is_the_mean_over_every_pair_of_the_sampled_latents():
    gen = torch.Generator().manual_seed(2)
    directions = _unit(torch.randn(30, 6, generator=gen))
    cos = (directions @ directions.T).abs()
    exact = (cos.sum() - 30) / (30 * 29)
    assert float(C.random_pair_alignment(directions, gen, n_latents=30)) == pytest.approx(float(exact))
    assert float(C.random_pair_alignment(directions, gen, n_latents=20)) == pytest.approx(float(exact), rel=0.2)


def test_no_coactive_pair_or_fewer_than_two_live_latents_gives_no_ratio():
    balance = C.CoactivationBalance()
    decoder = torch.randn(8, 4)
    one_each = torch.eye(8)  # every row has a single active latent
    balance.observe(one_each, decoder, torch.ones(8, dtype=torch.bool), 10)
    assert balance.ratio() is None
    balance.observe(torch.ones(4, 8), decoder, torch.eye(8, dtype=torch.bool)[0], 10)
    assert balance.ratio() is None


def test_the_controller_raises_the_targets_while_the_ratio_is_above_one_and_lowers_them_below():
    base = torch.full((10,), 0.1)
    control = L0Control(None, base)
    assert float(control.relative_scale()) == 1.0
    assert torch.allclose(control.scaled_targets(), FOUND_START * base)
    control.follow(1.2, 0.5)
    assert float(control.relative_scale()) == pytest.approx(torch.e ** 0.1)
    control.follow(0.6, 0.5)
    assert float(control.relative_scale()) == pytest.approx(torch.e ** -0.1)
    for _ in range(1000):
        control.follow(0.0, 1.0)
    assert float(control.relative_scale()) == pytest.approx(1 / FOUND_BOUND)
    target = base.clone()
    control.step(target, torch.full((10,), 0.5))  # the L0 average moves nothing without a request
    assert float(control.relative_scale()) == pytest.approx(1 / FOUND_BOUND)
    assert control.unmet_request() is None


def test_find_l0_is_refused_beside_the_options_that_also_move_the_targets():
    for clash in ({"target_l0": 3.0}, {"target_search": True}, {"targets": "adaptive"}):
        with pytest.raises(ValueError, match="find_l0"):
            GBATrainingSAEConfig(d_in=8, d_sae=32, find_l0=True, **clash)


def test_find_l0_moves_the_scale_every_check_logs_its_ratio_and_resumes_exactly(step_input, resumed_state):
    gen = torch.Generator().manual_seed(1)
    batches = [torch.relu(torch.randn(256, 8, generator=gen)) * 2 for _ in range(2 * C.CHECK_EVERY + 2)]

    def sae():
        torch.manual_seed(0)
        return GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, find_l0=True))

    straight = sae()
    scales = []
    for step, x in enumerate(batches):
        out = straight.training_forward_pass(step_input(x, step))
        scales.append(float(straight.bias_adaptation.l0_control.relative_scale()))
    assert scales[C.CHECK_EVERY - 1] == 1.0 and scales[C.CHECK_EVERY] != 1.0  # the first check moved it
    assert out.metrics["gba/coactivation_ratio"] == straight.bias_adaptation.coactivation.last_ratio
    state = straight.state_dict()
    resumed = resumed_state(sae, batches, 15)
    for key, value in state.items():
        assert torch.equal(resumed[key], value), key
    assert not any("coactivation" in key for key in straight.to_inference_sae().state_dict())


def test_a_found_l0_still_falling_at_the_end_of_training_is_reported():
    """Features that are all frequent (0.15 ... 0.05) and independent, as many as latents: latents
    that fire together stay less aligned than any two at every L0, so find_l0 keeps lowering the
    targets (measured: L0 0.71 -> 0.64 over the last fifth, against a true L0 of 6.85) and says so."""
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    from gba_lens.data import SeededBatches
    from gba_lens.training.train import TrainConfig, train_sae

    model = SyntheticModel(SyntheticModelConfig(
        num_features=128, hidden_dim=64,
        firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.15, min_prob=0.05), seed=0))
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=64, d_sae=128, find_l0=True, valley_thresholds=True))
    with pytest.warns(UserWarning, match="find_l0 was still lowering the targets"):
        train_sae(sae, SeededBatches(model.sample, 1024, seed=0),
                  TrainConfig(total_samples=500_000, batch_size=1024, lr=1e-2, device="cpu"))
    assert float(sae.bias_adaptation.l0_control.relative_scale()) < 0.6


def test_a_found_l0_still_rising_at_the_end_of_training_is_reported():
    """An SAE with more latents than the data has features (48 in 24 dimensions, two per input, width
    128): near-copies of one feature fire together, the ratio stays above 1 and find_l0 keeps raising
    the targets (measured: the L0 ends near 3x the true 2, while it falls over the last fifth as the
    encoder sharpens: the scale, not the L0, tells the direction) and says so."""
    from gba_lens.data import SeededBatches
    from gba_lens.synthetic.metrics import evaluate_on_synthetic
    from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
    from gba_lens.training.train import TrainConfig, train_sae

    model = SparseMixtureModel(SparseMixtureConfig(n_features=48, d=24, sparsities=(2,), sparsity_weights=(1.0,), seed=0))
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=24, d_sae=128, find_l0=True, valley_thresholds=True))
    with pytest.warns(UserWarning, match="find_l0 was still raising the targets"):
        train_sae(sae, SeededBatches(model.sample, 256, seed=0),
                  TrainConfig(total_samples=150_000, batch_size=256, lr=3e-3, lr_decay_steps=175))
    sae.eval()
    assert evaluate_on_synthetic(sae, model, n_samples=5_000).l0 > 2 * 2.0
    assert float(sae.bias_adaptation.l0_control.relative_scale()) > 4
