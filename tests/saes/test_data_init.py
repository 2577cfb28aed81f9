"""``encoder_init="data"``: the neurons start at inputs of the first batch (gba_lens/saes/data_init.py)."""

import pytest
import torch

from gba_lens.saes import data_init
from gba_lens.saes.data_init import directions_from_data, spread_draw
from gba_lens.saes.gba_options import DEFAULT_FIRING_WORTH, GBAOptions
from gba_lens.training.methods import build_sae


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_the_draw_spreads_over_directions_that_a_uniform_draw_would_mostly_miss():
    # 95 near-copies of one direction and one input along each of five others: six draws take all six
    # directions (a uniform draw takes the five rare ones with probability about 1e-7).
    torch.manual_seed(0)
    copies = torch.eye(8)[0] + 1e-3 * torch.randn(95, 8)
    inputs = _unit(torch.cat([copies, torch.eye(8)[1:6]]))
    taken = spread_draw(inputs, 6, torch.Generator().manual_seed(1))
    assert len(set(taken.tolist())) == 6
    assert set(range(95, 100)) <= set(taken.tolist())


def test_the_draw_takes_distinct_inputs_even_when_every_one_is_parallel_to_one_taken():
    inputs = _unit(torch.ones(10, 4))  # all the same direction: the weights fall to 0
    taken = spread_draw(inputs, 10, torch.Generator().manual_seed(0))
    assert sorted(taken.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="cannot draw 11 distinct inputs from 10"):
        spread_draw(inputs, 11, torch.Generator().manual_seed(0))


def test_neurons_start_at_distinct_inputs_then_half_an_input_and_half_their_own_direction():
    torch.manual_seed(0)
    inputs, own = torch.randn(32, 16), torch.randn(48, 16)
    starts = directions_from_data(inputs, own)
    assert torch.allclose(starts.norm(dim=1), torch.ones(48))
    best, which = (starts[:32] @ _unit(inputs).T).abs().max(1)
    assert torch.allclose(best, torch.ones(32), atol=1e-5)
    assert sorted(which.tolist()) == list(range(32))  # each input once
    # beyond the batch: REPEAT_SHARE of an input and the rest the neuron's own direction
    share = data_init.REPEAT_SHARE
    candidates = _unit(share * _unit(inputs)[None] + (1 - share) * _unit(own)[32:, None])  # [16, 32, d]
    matches = ((candidates - starts[32:, None]).norm(dim=-1) < 1e-5).sum(1)
    assert matches.tolist() == [1] * 16


def test_an_input_of_norm_0_leaves_its_neuron_s_own_direction():
    torch.manual_seed(0)
    inputs, own = torch.randn(8, 5), torch.randn(8, 5)
    inputs[3] = 0.0
    starts = directions_from_data(inputs, own)
    kept = [i for i in range(8) if torch.allclose(starts[i], _unit(own)[i])]
    assert len(kept) == 1
    others = [i for i in range(8) if i not in kept]
    assert torch.allclose((starts[others] @ _unit(inputs[[0, 1, 2, 4, 5, 6, 7]]).T).abs().max(1).values,
                          torch.ones(7), atol=1e-5)


def test_the_start_is_the_same_whatever_the_global_random_state():
    """Every rank of a data-parallel run holds the same global batch and must start alike."""
    inputs, own = torch.randn(64, 8), torch.randn(100, 8)
    torch.manual_seed(1)
    first = directions_from_data(inputs, own)
    torch.manual_seed(2)
    torch.rand(1000)
    assert torch.equal(first, directions_from_data(inputs, own))


def _drawn_inputs(starts: torch.Tensor, inputs: torch.Tensor) -> list[int]:
    best, which = (starts @ _unit(inputs).T).abs().max(1)
    assert torch.allclose(best, torch.ones(len(starts)), atol=1e-5)
    return which.tolist()


def test_the_draw_follows_the_run_s_seed_through_the_neurons_random_directions():
    """Two seeds draw different inputs from one batch (a random start differs by seed too); the same
    seed draws the same ones."""
    inputs = torch.randn(200, 8, generator=torch.Generator().manual_seed(5))
    draws = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        sae = build_sae("gba", 8, 16, encoder_init="data")
        sae.initialize_from_batch(inputs)
        draws.append(_drawn_inputs(sae.W_enc.data.T, inputs - inputs.mean(0)))
    assert draws[0] == draws[2]
    assert draws[0] != draws[1]
    assert len(set(draws[0])) == 16 and len(set(draws[1])) == 16


def test_the_draw_s_seed_is_read_from_the_first_direction_alone():
    torch.manual_seed(0)
    own = torch.randn(10, 6)
    moved = own.clone()
    moved[1:] = torch.randn(9, 6)
    assert data_init.draw_seed(own) == data_init.draw_seed(moved)
    moved[0, 0] += 1e-6
    assert data_init.draw_seed(own) != data_init.draw_seed(moved)
    assert 0 <= data_init.draw_seed(own) < 2**63  # a valid torch seed


def test_a_gba_sae_starts_at_its_first_batch_once(monkeypatch):
    from gba_lens.compat import TrainStepInput

    sae = build_sae("gba", 12, 40, encoder_init="data", decoder_init_norm=0.1)
    batch = torch.randn(64, 12) * 3 + 5
    calls = []
    original = data_init.start_at_inputs
    monkeypatch.setattr("gba_lens.saes.gba.start_at_inputs", lambda *a: calls.append(1) or original(*a))
    sae.train()
    for _ in range(3):
        sae.training_forward_pass(TrainStepInput(sae_in=batch, coefficients={}, dead_neuron_mask=None,
                                                 n_training_steps=0, is_logging_step=False))
    assert calls == [1]
    inputs = _unit(batch - batch.mean(0))  # as the encoder sees them, up to the scale
    encoder = sae.W_enc.data.T
    assert torch.allclose((encoder @ inputs.T).abs().max(1).values, torch.ones(40), atol=1e-5)
    assert torch.allclose(sae.W_dec.data.norm(dim=1), torch.full((40,), 0.1), atol=1e-6)
    assert torch.allclose(_unit(sae.W_dec.data), encoder, atol=1e-6)


def test_a_random_start_is_left_as_saelens_draws_it():
    torch.manual_seed(0)
    sae = build_sae("gba", 12, 40, encoder_init="random")
    before = sae.W_enc.data.clone()
    sae.initialize_from_batch(torch.randn(64, 12))
    assert torch.equal(sae.W_enc.data, before)


def test_a_data_start_needs_the_first_batch_to_set_the_input_scale():
    with pytest.raises(ValueError, match="encoder_init='data' .* needs input_norm='unit_mean'"):
        build_sae("gba", 12, 40, encoder_init="data", input_norm="none")
    with pytest.raises(ValueError, match=r"encoder_init must be one of \('random', 'data'\), got 'kmeans'"):
        build_sae("gba", 12, 40, encoder_init="kmeans")


@pytest.mark.parametrize(("options", "resolved"), [
    ({}, ("data", DEFAULT_FIRING_WORTH)),                    # the defaults: find_l0 with data starts
    ({"find_l0": False}, ("random", 0.0)),                   # the paper's rule, as the paper starts
    ({"target_l0": 4.0}, ("data", DEFAULT_FIRING_WORTH)),    # the defaults told their level
    ({"target_search": True}, ("random", 0.0)),              # another option sets the level
    ({"n_groups": 1}, ("random", 0.0)),
    ({"input_norm": "none"}, ("random", 0.0)),               # no first-batch scale to start from
    ({"input_norm": "per_token"}, ("data", DEFAULT_FIRING_WORTH)),  # scaled on the first batch too
    ({"encoder_init": "random"}, ("random", 0.0)),           # firing_worth only pays with data starts
    ({"encoder_init": "data", "find_l0": False}, ("data", 0.0)),
    ({"firing_worth": 0.3}, ("data", 0.3)),
    ({"firing_worth": 0.0}, ("data", 0.0)),
])
def test_unset_start_options_resolve_to_data_starts_with_find_l0(options, resolved):
    cfg = build_sae("gba", 12, 40, **options).cfg
    assert (cfg.encoder_init, cfg.firing_worth) == resolved
    assert GBAOptions(**options).resolved_start_options() == resolved  # the command line's options resolve alike
