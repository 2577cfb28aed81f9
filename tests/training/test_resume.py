"""Checkpoints: a killed run resumes exactly; bad checkpoints and bad data give clear errors."""

import json

import pytest
import torch

from gba_lens.data.batches import SeededBatches, TensorBatches
from gba_lens.saes import decoder_refit, firing_worth, refit_check
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.training.state_io import CheckpointError, write_checksums
from gba_lens.training.train import TrainConfig, train_sae
from gba_lens.training.trainer import latest_checkpoint, list_checkpoints
from training_builders import Killed, dies_at, relu_sampler, tiny_gba_sae, use_search_constants

STEPS, BATCH = 24, 64


_sample = relu_sampler(10, scale=3)


@pytest.fixture(autouse=True)
def refit_after_the_last_checkpoint(monkeypatch):
    """decoder_refit (a default) reads the run's last 3 steps, after its last checkpoint (step 20): a run
    resumed before them ends as an uninterrupted one (inside them it refits on fewer rows and says so:
    tests/training/test_decoder_refit_training.py)."""
    monkeypatch.setattr(decoder_refit, "ROWS", 3 * BATCH)
    monkeypatch.setattr(refit_check, "TRUSTED_FIRINGS", 0.0)  # every refit unchecked


def _sae():
    # update_interval 4: the every-T-steps schedule must survive the resume too
    return tiny_gba_sae(10, 40, update_interval=4)


def _cfg(tmp_path, **kw):
    base = dict(total_samples=STEPS * BATCH, batch_size=BATCH, lr=1e-2, checkpoint_dir=str(tmp_path),
                checkpoint_every=5, lr_decay_steps=10)
    return TrainConfig(**{**base, **kw})


def test_killed_run_resumes_as_if_uninterrupted(tmp_path):
    full = _sae()
    train_sae(full, SeededBatches(_sample, BATCH, seed=3), _cfg(tmp_path / "full"))

    run_dir = tmp_path / "killed"
    with pytest.raises(Killed):
        train_sae(_sae(), dies_at(SeededBatches(_sample, BATCH, seed=3), 13), _cfg(run_dir))
    assert latest_checkpoint(run_dir).name == "step_000000010"  # the last periodic checkpoint

    resumed = GBATrainingSAE(GBATrainingSAEConfig(d_in=10, d_sae=40, n_groups=4, update_interval=4))
    # the same kind of stream as the killed run (the directory records the data's identity)
    trainer = train_sae(resumed, dies_at(SeededBatches(_sample, BATCH, seed=3), -1), _cfg(run_dir))
    assert trainer.n_training_steps == STEPS

    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:  # weights, biases, input scale and the controller's statistics
        assert torch.allclose(full_state[key], resumed_state[key], atol=1e-6), key
    assert resumed.b_enc.min() < 0  # biases moved, so the comparison is not trivial
    assert len(list_checkpoints(run_dir)) <= 2  # old periodic checkpoints are pruned


def _killed_and_resumed(tmp_path, sae) -> dict:
    """The state of an uninterrupted run of ``sae()``, after checking that a run killed at batch 13
    and resumed from its checkpoint at step 10 ends in the same state."""
    full = sae()
    train_sae(full, SeededBatches(_sample, BATCH, seed=3), _cfg(tmp_path / "full"))
    run_dir = tmp_path / "killed"
    with pytest.raises(Killed):
        train_sae(sae(), dies_at(SeededBatches(_sample, BATCH, seed=3), 13), _cfg(run_dir))
    resumed = sae()
    train_sae(resumed, dies_at(SeededBatches(_sample, BATCH, seed=3), -1), _cfg(run_dir))
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        assert torch.allclose(full_state[key].float(), resumed_state[key].float(), atol=1e-6), key
    return full_state


def test_a_killed_target_search_run_resumes_with_its_snapshot_and_scales(tmp_path, monkeypatch):
    use_search_constants(monkeypatch.setattr)  # checks at 9 (in the checkpoint at 10) and 12
    full_state = _killed_and_resumed(tmp_path, lambda: tiny_gba_sae(10, 40, update_interval=4, target_search=True))
    assert (full_state["bias_adaptation.target_search.scale"] > 1).any()  # the search raised some


def test_a_killed_firing_worth_run_resumes_with_its_averages(tmp_path, monkeypatch):
    monkeypatch.setattr(firing_worth, "START", 0.0)  # measurements at steps 10 (after the checkpoint at 10) and 20
    full_state = _killed_and_resumed(tmp_path, lambda: tiny_gba_sae(10, 40, update_interval=4, firing_worth=1.0))
    assert full_state["bias_adaptation.firing_worth.checks"].item() == 2
    assert full_state["bias_adaptation.firing_worth.measured"].any()


def test_a_resumed_run_keeps_the_l0_course_of_the_steps_before_its_checkpoint(tmp_path):
    full = train_sae(_sae(), SeededBatches(_sample, BATCH, seed=3), _cfg(tmp_path / "full", lr_decay_steps=0))
    run_dir = tmp_path / "killed"
    with pytest.raises(Killed):  # the checkpoint at step 20 holds step 19, in the second-to-last tenth
        train_sae(_sae(), dies_at(SeededBatches(_sample, BATCH, seed=3), 22), _cfg(run_dir, lr_decay_steps=0))
    assert latest_checkpoint(run_dir).name == "step_000000020"
    resumed = train_sae(_sae(), dies_at(SeededBatches(_sample, BATCH, seed=3), -1), _cfg(run_dir, lr_decay_steps=0))
    assert resumed.l0_course.steps == full.l0_course.steps == [2, 3]
    assert torch.allclose(resumed.l0_course.sums, full.l0_course.sums, atol=1e-5)
    assert full.l0_course.sums.min() > 0


def test_checkpoints_are_safetensors_and_json_only(tmp_path):
    train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(tmp_path))
    files = {p.suffix for p in latest_checkpoint(tmp_path).iterdir()}
    assert files <= {".safetensors", ".json"}, files
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written directories left


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(tmp_path))
    for ckpt in list_checkpoints(tmp_path):  # every checkpoint: nothing intact to fall back to
        (ckpt / "trainer_state.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupted"), pytest.warns(UserWarning, match="cannot resume"):
        train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(tmp_path))


def test_foreign_checkpoint_is_refused(tmp_path):
    train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(tmp_path))
    for ckpt in list_checkpoints(tmp_path):
        cfg = json.loads((ckpt / "cfg.json").read_text())
        cfg["architecture"] = "topk"
        (ckpt / "cfg.json").write_text(json.dumps(cfg))
        write_checksums(ckpt)  # a consistent checkpoint of another architecture, not a corrupt one
    with pytest.raises(CheckpointError, match="topk"), pytest.warns(UserWarning):
        train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(tmp_path))


def test_nan_batch_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    acts = _sample(STEPS * BATCH)
    acts[15 * BATCH + 3, 2] = float("inf")  # row of batch 15 (no shuffling across epoch 0 below)
    data = TensorBatches(acts, BATCH)
    data._perm = torch.arange(acts.shape[0])
    data._epoch = 0
    with pytest.raises(ValueError, match="NaN/inf"):
        train_sae(_sae(), data, _cfg(tmp_path))
    assert latest_checkpoint(tmp_path).name == "step_000000015"


def test_empty_or_misshapen_data_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        TensorBatches(torch.empty(0, 10), 4)
    with pytest.raises(ValueError, match=r"\[batch, 10\]"):
        train_sae(_sae(), iter([torch.randn(8, 7)]), TrainConfig(total_samples=8, batch_size=8))
