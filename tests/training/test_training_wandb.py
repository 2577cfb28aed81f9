"""W&B logging: offline, never needs a login, and never stops training when it fails."""

from pathlib import Path

import pytest
import wandb
from wandb.sdk.wandb_run import Run

from gba_lens.data.batches import SeededBatches
from gba_lens.training.train import TrainConfig, train_sae
from training_builders import relu_sampler, tiny_gba_sae


def _run(tmp_path, steps=30):
    sae = tiny_gba_sae(8, 32)
    cfg = TrainConfig(total_samples=64 * steps, batch_size=64, lr=1e-2, wandb_project="gba-test", log_every=5, histogram_every=2,
                      dead_feature_window=10)
    trainer = train_sae(sae, SeededBatches(relu_sampler(8), 64), cfg)
    return sae, trainer


def test_offline_run_logs_gba_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logged: list[dict] = []
    real_log = Run.log  # wandb.init rebinds wandb.log to the run's method: spy on the class

    run_dirs: list[Path] = []

    def spy(self, data, *args, **kwargs):
        logged.append(dict(data))
        run_dirs.append(Path(self.dir).parent)  # wandb's settings (and so its dir) are process-wide
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    _run(tmp_path)
    keys = set().union(*logged)
    for key in ("losses/mse_loss", "metrics/nmse", "metrics/l0", "sparsity/dead_fraction",
                "metrics/gba_groups/group_0_frequency", "metrics/gba_groups/group_0_target",
                "metrics/gba_groups/group_0_bias", "metrics/gba_groups/group_0_decoder_stability", "weights/gba_bias",
                "gba/refit_error_before", "gba/refit_error_after"):  # the defaults refit the decoder at the end
        assert key in keys, (key, sorted(keys))
    refit = next(entry for entry in logged if "gba/refit_error_after" in entry)
    assert refit["gba/refit_error_after"] < refit["gba/refit_error_before"]
    assert run_dirs[0].name.startswith("offline-run-")  # offline: no network, no login
    runs = list(run_dirs[0].glob("run-*.wandb"))
    assert runs and runs[0].stat().st_size > 0
    assert wandb.run is None  # the run we started was finished


def test_training_survives_a_failing_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Run, "log", broken)
    with pytest.warns(UserWarning, match="logging failed"):
        sae, trainer = _run(tmp_path)
    assert trainer.n_training_steps == 30  # trained to the end
    assert sae.b_enc.min() < 0


def test_a_failing_wandb_init_trains_without_logging(tmp_path, monkeypatch):
    def broken_init(*args, **kwargs):
        raise RuntimeError("no network, no login")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(UserWarning, match="could not start W&B"):
        _, trainer = _run(tmp_path, steps=10)
    assert trainer.n_training_steps == 10
