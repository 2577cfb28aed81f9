"""scripts/coactivation_nulls.py: the pair readings on inputs whose answer is known (the runs
themselves are the page's figures)."""

import pytest
import torch


def test_a_latent_pushed_over_its_threshold_by_another_is_explained_away(script):
    explained_away = script("coactivation_nulls").explained_away
    z = torch.tensor([[2.0, 0.5]])          # latent 0 fires strongly, latent 1 only just
    y = torch.tensor([[1.0, 0.1]])          # y = u + b
    gain = torch.tensor([[1.0, 0.3], [0.3, 1.0]])
    still = explained_away(z, y, gain)[0]
    assert not still[0, 1]                  # without latent 0's output (2 x 0.3), latent 1 stays silent
    assert still[1, 0]                      # without latent 1's (0.5 x 0.3), latent 0 still fires


def test_the_shifted_code_reads_as_independent_features(script):
    nulls = script("coactivation_nulls")
    gen = torch.Generator().manual_seed(0)
    fire = (torch.rand(4000, 1, generator=gen) < 0.1).float()
    z = fire.repeat(1, 8)                   # eight latents that always fire together
    code = nulls.shifted_code(z, len(z), torch.Generator().manual_seed(1))
    together = (code.T @ code / 4000)[~torch.eye(8, dtype=torch.bool)].mean()
    assert together == pytest.approx(0.01, abs=0.005)   # 0.1 x 0.1, not 0.1


@pytest.mark.parametrize("args, message", [
    (["--models", "A", "--pairs"], "--pairs needs the features behind each input"),
    (["--models", "small", "--truth-shifted"], "--truth-shifted needs a SyntheticModel's feature generator"),
])
def test_options_that_need_a_models_features_refuse_the_others(script, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        script("coactivation_nulls").main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


class _IdentitySAE:
    """Inputs in latent units: latent m fires with value x_m where x_m > 0.5 (JumpReLU at 0.5)."""

    def __init__(self, decoder: torch.Tensor):
        self.W_dec, self.W_enc = decoder, torch.eye(decoder.shape[0])
        self.b_enc = torch.full((decoder.shape[0],), -0.5)

    def encode_with_hidden_pre(self, x):
        y = x @ self.W_enc + self.b_enc
        return (x @ self.W_enc) * (y > 0), y

    def decode(self, z):
        return z @ self.W_dec


def test_the_frequency_weighted_null_reads_one_for_latents_that_fire_independently(script):
    nulls = script("coactivation_nulls")
    rare = torch.tensor([[0.3, 0.3, 0.9, 0.0], [0.3, 0.3, 0.0, 0.9]])
    decoder = torch.cat([torch.eye(4)[:2], rare / rare.norm(dim=1, keepdim=True)])  # frequent pair orthogonal
    gen = torch.Generator().manual_seed(0)
    rates = torch.tensor([0.5, 0.5, 0.02, 0.02])
    x = (torch.rand(20_000, 4, generator=gen) < rates).float()          # independent firing
    read = nulls.readings(_IdentitySAE(decoder), x, torch.full((4,), 0.5))
    assert read["cut"] < 0.5                  # two live latents: mostly the rare, aligned pairs
    assert read["frequency_weighted"] == pytest.approx(1.0, abs=0.1)
    assert read["magnitude_weighted"] == pytest.approx(1.0, abs=0.1)
    assert read["shifted"] == pytest.approx(read["cut"], abs=0.1)       # already independent


def test_valley_neurons_finds_the_second_mode(script):
    nulls = script("coactivation_nulls")
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(8000, 2, generator=gen) * 0.5                     # the interference mode near 0
    feature = torch.rand(8000, generator=gen) < 0.1
    y = noise.clone()
    y[feature, 0] = 3.0 + 0.1 * torch.rand(int(feature.sum()), generator=gen)
    y[:, 1] = torch.empty(8000).exponential_(2.0, generator=gen)       # one mode, a long tail
    assert nulls.valley_neurons(y, torch.zeros(2)).tolist() == [True, False]


def test_explained_away_pairs_read_on_each_rows_active_latents_match_the_dense_definition(script):
    nulls = script("coactivation_nulls")
    gen = torch.Generator().manual_seed(3)
    decoder = torch.nn.functional.normalize(torch.randn(12, 12, generator=gen), dim=1)  # d_in = width: inputs are codes
    sae = _IdentitySAE(decoder)
    sae.W_enc = torch.nn.functional.normalize(torch.randn(12, 12, generator=gen), dim=0) + torch.eye(12)
    x = torch.rand(300, 12, generator=gen) * (torch.rand(300, 12, generator=gen) < 0.3)
    read = nulls.readings(sae, x, torch.full((12,), 0.5))
    z, y = sae.encode_with_hidden_pre(x)
    still = nulls.explained_away(z, y, decoder @ sae.W_enc)              # every row x every pair of latents
    cosines = (decoder @ decoder.T).abs()
    kept = (cosines <= nulls.CUT) & ~torch.eye(12, dtype=torch.bool)
    active = (z > 0).float()
    pairs = active[:, :, None] * active[:, None, :] * kept
    live = active.any(0)
    base = (live[:, None] & live[None, :] & kept).float()
    baseline = (base * cosines).sum() / base.sum()
    for key, mask in (("both_stay", still & still.transpose(1, 2)), ("either_stays", still | still.transpose(1, 2))):
        chosen = pairs * mask
        assert chosen.sum() > 0
        assert read[key] == pytest.approx(float((chosen * cosines).sum() / chosen.sum() / baseline), rel=1e-5)


def test_true_cooccurrence_reads_one_for_independent_features_and_more_for_features_that_occur_together(script):
    nulls = script("coactivation_nulls")
    gen = torch.Generator().manual_seed(0)
    independent = (torch.rand(20_000, 6, generator=gen) < 0.1).float()
    assert nulls.true_cooccurrence(independent) == pytest.approx(1.0, abs=0.05)
    together = independent.clone()
    together[:, 1] = together[:, 0]                      # feature 1 occurs exactly when feature 0 does
    assert nulls.true_cooccurrence(together) > 1.2
    exclusive = torch.zeros(20_000, 6)
    exclusive[torch.arange(20_000), torch.randint(0, 6, (20_000,), generator=gen)] = 1.0  # one per input
    assert nulls.true_cooccurrence(exclusive) == 0.0


class _Generator:
    def __init__(self, features):
        self.features = features

    def sample(self, n):
        return self.features[:n].to_sparse()


class _Dictionary:
    def __init__(self, n):
        self.feature_vectors = torch.eye(n)

    def __call__(self, features):
        return features


class _SyntheticModel:
    """Inputs are the features themselves (identity dictionary)."""

    def __init__(self, features):
        self.activation_generator = _Generator(features)
        self.feature_dict = _Dictionary(features.shape[1])


def test_truth_shifted_inputs_keep_each_features_rate_and_make_them_occur_independently(script):
    nulls = script("coactivation_nulls")
    gen = torch.Generator().manual_seed(0)
    parent = (torch.rand(8000, 1, generator=gen) < 0.2).float()
    features = torch.cat([parent, parent * (torch.rand(8000, 3, generator=gen) < 0.5)], 1)  # children need the parent
    inputs, truth = nulls.truth_shifted_inputs(_SyntheticModel(features), 8000, torch.Generator().manual_seed(1))
    assert truth["true_cooccurrence"] == pytest.approx(nulls.true_cooccurrence(features)) and truth["true_cooccurrence"] > 2

    assert torch.equal((inputs != 0).sum(0), (features != 0).sum(0))      # each feature's count kept
    assert nulls.true_cooccurrence(inputs) == pytest.approx(1.0, abs=0.1)


def test_true_cooccurring_alignment_is_above_one_when_features_that_occur_together_share_directions(script):
    nulls = script("coactivation_nulls")
    gen = torch.Generator().manual_seed(0)
    features = (torch.rand(20_000, 6, generator=gen) < 0.1).float()
    features[:, 1] = features[:, 0]                      # features 0 and 1 occur together ...
    directions = torch.nn.functional.normalize(torch.randn(6, 16, generator=gen), dim=1)
    independent = nulls.true_cooccurring_alignment((torch.rand(20_000, 6, generator=gen) < 0.1).float(), directions)
    assert independent == pytest.approx(1.0, abs=0.05)
    directions[1] = torch.nn.functional.normalize(directions[0] + 0.3 * directions[1], dim=0)  # ... and point the same way
    assert nulls.true_cooccurring_alignment(features, directions) > 1.5


def test_the_unshifted_residual_reads_the_check_where_the_sae_reconstructs_exactly(script):
    nulls = script("coactivation_nulls")
    gen = torch.Generator().manual_seed(4)
    decoder = torch.eye(5) + 0.2 * torch.rand(5, 5, generator=gen)
    sae = _IdentitySAE(decoder)
    sae.W_enc = torch.linalg.inv(decoder)                                 # encode(decode(z)) = z
    fire = (torch.rand(6000, 1, generator=gen) < 0.3).float()
    code = torch.cat([fire, fire, (torch.rand(6000, 3, generator=gen) < 0.3).float()], 1)  # latents 0 and 1 fire together
    read = nulls.readings(sae, code @ decoder, torch.full((5,), 0.5))
    assert read["unshifted_residual"] == pytest.approx(read["cut"])       # same code, same pairs
    assert abs(read["own_code_residual"] - read["cut"]) > 0.02             # the shift breaks the pair 0-1


def test_a_runs_gap_between_its_two_readings_is_averaged_by_fifths_of_its_checks(script, monkeypatch):
    nulls = script("coactivation_nulls")
    trace = [0.1 * (i // 2) for i in range(10)]  # the gap grows by 0.1 every fifth
    monkeypatch.setattr(nulls.coactivation, "GATE", 0.15)
    out = nulls.fifths(trace)
    assert out["gap_by_fifth"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert out["over_gate_by_fifth"] == [0.0, 0.0, 1.0, 1.0, 1.0]
    monkeypatch.setattr(nulls.coactivation, "GATE", 0.0)
    assert "over_gate_by_fifth" not in nulls.fifths(trace)


def test_recording_keeps_each_checks_two_readings(script, monkeypatch):
    from sae_lens.saes.sae import TrainStepInput

    from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig

    nulls = script("coactivation_nulls")
    x = torch.relu(torch.randn(256, 8, generator=torch.Generator().manual_seed(1))) * 2
    for gate, expected in ((0.09, 1), (0.0, 0)):  # one reading without MINMOD or GATE: nothing to record
        monkeypatch.setattr(nulls.coactivation, "GATE", gate)
        torch.manual_seed(0)
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, find_l0=True))
        trace = []
        nulls.recording(trace)(sae)
        for step in range(nulls.coactivation.CHECK_EVERY + 1):
            sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None,
                                                     n_training_steps=step, is_logging_step=False))
        assert len(trace) == expected
        if expected:
            assert trace[0] == sae.bias_adaptation.coactivation.last_gap


def test_the_refit_gives_a_latent_that_fires_without_its_feature_no_part_of_the_row(script):
    nulls = script("coactivation_nulls")
    sae = _IdentitySAE(torch.tensor([[1.0, 0.0], [0.6, 0.8]]))          # decoder rows d0, d1
    x = torch.tensor([[1.0, 0.0], [1.3, 0.4], [0.0, 0.0]])              # d0 alone; d0 + 0.5 d1; nothing
    z = torch.tensor([[1.0, 0.3], [1.0, 0.5], [0.0, 0.0]])              # row 0: latent 1 fires anyway
    slots, refit = nulls.refit_over_activation(sae, x, z)
    assert slots.tolist() == [[0, 1], [0, 1], [-1, -1]]
    assert refit[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-4)  # the false positive gets nothing
    assert refit[1].tolist() == pytest.approx([1.0, 1.0], abs=1e-4)
    assert refit[2].tolist() == [0.0, 0.0]


def test_first_active_keeps_each_rows_first_latents_as_the_trainers_check_reads_them(script, monkeypatch):
    nulls = script("coactivation_nulls")
    monkeypatch.setattr(nulls.coactivation, "MAX_ACTIVE", 2)
    mask = torch.tensor([[True, False, True, True, True], [False, True, False, False, False]])
    assert nulls.first_active(mask).tolist() == [[True, False, True, False, False], [False, True, False, False, False]]
