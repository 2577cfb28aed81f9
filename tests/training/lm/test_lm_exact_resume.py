"""``gba-lens train`` resumes exactly: killed after step 13 (last checkpoint at step 12, after a
W&B-time evaluation at step 9 that reads tokens from the same activation store), then run again
with the same settings, it ends bit-identical to an uninterrupted run, the decoder refit on its last rows
included (the checkpoint lies inside them)."""

import pytest
import torch

from gba_lens.saes import decoder_refit
from gba_lens.training.lm import LMTrainConfig, train_gba_on_model
from gba_lens.training import refit_window
from gba_lens.training.trainer import GBATrainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

HOOK = "blocks.1.hook_resid_pre"
SETTINGS = dict(hook=[HOOK], training_tokens=8192, batch_tokens=512, width=[32], context_size=32, eval_tokens=256,
                eval_batch_prompts=4, store_batch_prompts=8, buffer_batches=2, device="cpu", checkpoint_every=3,
                wandb_project="gba-test", log_every=1)


class Killed(Exception):
    pass


def test_killed_lm_run_resumes_bit_identical(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # decoder_refit (a default) reads the run's last 3,072 rows, steps 10-15: the run resumed at step 12 keeps the
    # rows of steps 10 and 11 from the batches it replays, and refits on the same rows as the uninterrupted run
    monkeypatch.setattr(decoder_refit, "ROWS", 3072)
    refits, refit = [], refit_window.refit_decoder
    monkeypatch.setattr(refit_window, "refit_decoder", lambda sae, rows: refits.append(len(rows)) or refit(sae, rows))
    full = train_gba_on_model(LMTrainConfig(out=str(tmp_path / "full"), **SETTINGS), model=model)

    original, calls = GBATrainer.step, []

    def dies_at_step_13(self, batch):
        calls.append(1)
        if len(calls) == 14:
            raise Killed
        return original(self, batch)

    monkeypatch.setattr(GBATrainer, "step", dies_at_step_13)
    with pytest.raises(Killed):
        train_gba_on_model(LMTrainConfig(out=str(tmp_path / "run"), **SETTINGS), model=model)
    monkeypatch.setattr(GBATrainer, "step", original)
    capsys.readouterr()
    resumed = train_gba_on_model(LMTrainConfig(out=str(tmp_path / "run"), **SETTINGS), model=model)
    assert "at step 12" in capsys.readouterr().err
    assert refits == [3072, 3072]  # the full run and the resumed one refitted on the same last rows

    a, b = full.training_saes[HOOK].state_dict(), resumed.training_saes[HOOK].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.dataset_rows_used == full.dataset_rows_used
