"""The synthetic experiments on a chosen device (``gba-lens recover --device``): the device reaches
every run's data and SAE (checked on CPU), and on a CUDA machine a small recovery instance trains
and recovers there (skipped without one)."""

import pytest
import torch

from gba_lens import experiments as ex
from gba_lens.experiments import runner
from gba_lens.synthetic.paper_model import SparseMixtureModel, small_model_config
from gba_lens.training.train import TrainConfig, resolve_device


class _Captured(Exception):
    pass


def test_device_reaches_every_run(monkeypatch):
    jobs: list[ex.Job] = []

    def capture(batch, workers=None, desc="", progress=True):
        jobs.extend(batch)
        raise _Captured

    monkeypatch.setattr(runner, "run_jobs", capture)
    runs = {
        "paper toy": lambda: ex.run_paper_toy(ex.PaperToySetup(seeds=(0,), device="cuda:3")),
        "zipf": lambda: ex.run_zipf_comparison(ex.ZIPF_CONFIGS[:1], seeds=(0,), device="cuda:3"),
        "resonance": lambda: ex.run_resonance_sweep(ex.ResonanceSetup(device="cuda:3")),
    }
    for name, run in runs.items():
        before = len(jobs)
        with pytest.raises(_Captured):
            run()
        assert len(jobs) > before, name
    # The SAE is built on train.device and the data model on its factory's device argument.
    assert all(job.train.device == "cuda:3" and job.model_args[-1] == "cuda:3" for job in jobs)
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


# The same instance trains on CPU in tests/synthetic/test_recovery.py; this one checks the CUDA path of the
# experiments (data model, SAE and evaluation on the GPU), which a CPU-only machine cannot run.
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA device (CI has none); the same instance runs on CPU in test_recovery.py")
def test_small_recovery_runs_on_cuda():
    cfg = small_model_config(0)
    train = TrainConfig(total_samples=150_000, batch_size=256, lr=3e-3, lr_decay_steps=175, device="cuda")
    record = ex.run_job(ex.Job(ex.MethodSpec("GBA", "gba"), SparseMixtureModel, (cfg, "cuda"), 128, train, 0,
                               eval_samples=5_000, consistency_samples=1_000))
    assert record.sae.device.type == "cuda"
    assert record.result.frr_08 >= 0.95 and record.result.frr_09 >= 0.9, record.result
    assert record.directions.device.type == "cpu" and record.frequencies.shape == (128,)
