"""Every file of a checkpoint truncated, bit-flipped or (JSON) made invalid: the damage is
detected at resume, reported with the file's path, the checkpoint is moved aside (not deleted)
and the previous intact one is used; with no intact one left the error lists what failed."""

import json
import shutil

import pytest
import torch

from fault_tools import FIGURES
from gba_lens.data.batches import SeededBatches
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.training.state_io import CHECKSUMS_FILENAME, CheckpointError
from gba_lens.training.train import TrainConfig, train_sae
from gba_lens.training.trainer import list_checkpoints

BATCH, STEPS = 32, 12


def _sample(n):
    return torch.relu(torch.randn(n, 8)) * 2


def _sae():
    torch.manual_seed(0)
    return GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=16, n_groups=2))


def _cfg(path):
    return TrainConfig(total_samples=STEPS * BATCH, batch_size=BATCH, checkpoint_dir=str(path), checkpoint_every=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("trained")
    train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(path))
    assert [p.name for p in list_checkpoints(path)] == ["step_000000008", "step_000000012"]
    return path


def _truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(f):
    data = bytearray(f.read_bytes())
    data[len(data) * 3 // 4] ^= 0x10
    f.write_bytes(bytes(data))


def _bad_json(f):
    f.write_text(f.read_text()[:-3] + "}}{")


FILES = ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "trainer_state.json",
         "trainer_state.safetensors", "activation_scaler.json", CHECKSUMS_FILENAME]
CASES = [(f, how) for f in FILES for how in ("truncate", "flip", *(("json",) if f.endswith(".json") else ()))]


@pytest.mark.parametrize(("name", "how"), CASES)
def test_damaged_file_is_detected_and_the_previous_checkpoint_used(trained, tmp_path, name, how):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    newest = run / "step_000000012"
    assert (newest / name).exists()
    {"truncate": _truncate, "flip": _flip, "json": _bad_json}[how](newest / name)
    with pytest.warns(UserWarning) as caught:
        trainer = train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(run))
    messages = " ".join(str(w.message) for w in caught)
    assert "cannot resume from" in messages and str(newest) in messages
    assert name in messages  # the damaged file is named (not another one)
    assert "step_000000008" in messages  # ... and the older intact checkpoint used
    assert (run / "corrupt-step_000000012" / name).exists()  # moved aside, never deleted
    assert trainer.n_training_steps == STEPS
    FIGURES["corruptions detected"] += 1


def test_bad_json_without_checksums_names_the_json_file(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for ckpt in list_checkpoints(run):  # checkpoints written before checksums existed
        (ckpt / CHECKSUMS_FILENAME).unlink()
        _bad_json(ckpt / "trainer_state.json")
    with pytest.raises(CheckpointError, match=r"trainer_state\.json") as err, pytest.warns(UserWarning):
        train_sae(_sae(), SeededBatches(_sample, BATCH), _cfg(run))
    assert "trainer_state.safetensors" not in str(err.value)
    FIGURES["corruptions detected"] += 2


def test_stale_temporary_directories_are_removed_at_the_next_save(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    stale = run / ".tmp-step_000000016-abc"
    stale.mkdir()
    (stale / "sae_weights.safetensors").write_bytes(b"half")
    cfg = TrainConfig(total_samples=(STEPS + 4) * BATCH, batch_size=BATCH, checkpoint_dir=str(run),
                      checkpoint_every=4, resume_anyway=True)
    with pytest.warns(UserWarning, match="resume-anyway"):
        train_sae(_sae(), SeededBatches(_sample, BATCH), cfg)
    assert not stale.exists()
    assert json.loads((run / "run_settings.json").read_text())["train"]["total_samples"] == (STEPS + 4) * BATCH
