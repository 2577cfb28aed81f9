"""Test-wide settings: offline, single-threaded, W&B offline."""
import os

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "OMP_WAIT_POLICY": "PASSIVE",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores, often shared with another process: one thread avoids OpenMP spin-wait slowdowns.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _wandb_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield


@pytest.fixture
def online_wandb_fails(monkeypatch):
    """W&B configured (an API key: the rule says online) but its server unreachable: ``wandb.init``
    in online mode raises as a timed-out connection does; offline mode works. Yields the modes
    ``wandb.init`` was called with."""
    import wandb

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    real_init = wandb.init
    modes = []

    def flaky_init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("Timed out initializing run")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", flaky_init)
    yield modes
