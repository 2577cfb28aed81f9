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


def test_pairs_need_a_model_with_its_features_behind_each_input(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script("coactivation_nulls").main(["--models", "A", "--pairs"])
    assert exit_info.value.code == 2
    assert "--pairs needs the features behind each input" in capsys.readouterr().err
