"""Circuit utilities: W&B logging (offline files written; a failing W&B never stops the work)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from gba_lens import attach
from gba_lens.circuits import (
    WandbLogger,
    ablation_sweep,
    attribute,
    steering_sweep,
)

from circuit_builders import RESID


def _offline_files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(f"wandb/offline-run-*/files/media/**/{pattern}"))


def test_wandb_logging_offline(tiny, tmp_path):
    model, saes, clean, corrupt, metric, _ = tiny
    logger = WandbLogger(project="circuits-test", dir=str(tmp_path), mode="offline")
    with attach(model, saes, error_term=True) as att:
        res = attribute(att, clean, corrupt, metric, logger=logger, progress=False)
        steering_sweep(att, clean, {RESID: [3]}, [0.0, 1.0], metric, logger=logger, progress=False)
        ablation_sweep(att, clean, metric, logger=logger, progress=False)
    run_dir = Path(logger.run.dir).parent
    logger.finish()
    assert logger.errors == []
    tables = list((run_dir / "files" / "media" / "table").rglob("*.table.json"))
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(tables) == 3, tables
    assert len(images) >= 1 + len(res.hooks)  # steering plot + one heatmap per hook (+ ablation bars)


def test_wandb_failure_never_crashes(tiny, monkeypatch):
    import wandb

    model, saes, clean, corrupt, metric, _ = tiny

    def broken(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    logger = WandbLogger()
    with pytest.warns(UserWarning, match="W&B logging failed"):
        res = attribute(model, clean, corrupt, metric, saes=saes, logger=logger, progress=False)
    assert res.feature_scores and not logger.enabled
    res2 = attribute(model, clean, corrupt, metric, saes=saes, logger=logger, progress=False)  # silent now
    assert res2.total() == pytest.approx(res.total())


def test_logger_falls_back_offline_when_the_server_fails(tiny, tmp_path, monkeypatch, online_wandb_fails):
    model, saes, clean, corrupt, metric, _ = tiny
    monkeypatch.delenv("WANDB_MODE", raising=False)  # configured by the fixture's key: the rule says online
    modes = online_wandb_fails
    logger = WandbLogger(project="circuits-test", dir=str(tmp_path))
    with pytest.warns(UserWarning, match="logging offline instead") as record:
        attribute(model, clean, corrupt, metric, saes=saes, logger=logger, progress=False)
    assert len([w for w in record if "W&B" in str(w.message)]) == 1
    assert modes == ["online", "offline"] and logger.enabled and logger.errors == []
    assert logger.run.settings.mode == "offline"
    logger.finish()
    assert "WANDB_MODE" not in os.environ


def test_logger_with_wandb_disabled_logs_nothing_and_does_not_warn(tiny, monkeypatch):
    import wandb

    model, saes, clean, corrupt, metric, _ = tiny
    monkeypatch.setenv("WANDB_MODE", "disabled")

    def must_not_run(**kwargs):
        raise AssertionError("wandb.init called")

    monkeypatch.setattr(wandb, "init", must_not_run)
    logger = WandbLogger()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        attribute(model, clean, corrupt, metric, saes=saes, logger=logger, progress=False)
    assert not logger.enabled and logger.errors == [] and logger.run is None


def test_a_failing_plot_warns_and_the_rest_is_logged(tiny, tmp_path, monkeypatch):
    from gba_lens.circuits import AttributionResult

    model, saes, clean, corrupt, metric, _ = tiny

    def broken_heatmap(self, *args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(AttributionResult, "heatmap", broken_heatmap)
    logger = WandbLogger(project="circuits-test", dir=str(tmp_path), mode="offline")
    with pytest.warns(UserWarning, match="heatmap .* not logged") as record:
        res = attribute(model, clean, corrupt, metric, saes=saes, logger=logger, progress=False)
    assert len(record) == len(res.hooks)
    run_dir = Path(logger.run.dir).parent
    logger.finish()
    assert logger.errors == []
    assert len(list((run_dir / "files" / "media" / "table").rglob("*.table.json"))) == 1
