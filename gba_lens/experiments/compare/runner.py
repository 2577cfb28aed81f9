"""Run a comparison preset and write its report."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from gba_lens.experiments.compare.config import CompareConfig


def run_compare(cfg: CompareConfig, progress: bool = True) -> dict[str, Any]:
    """Run ``cfg.preset`` and write compare_<preset>.{md,json,png} to ``cfg.out`` (and W&B if
    asked); returns the results (JSON-ready), with ``files`` naming what was written. A GBA run whose L0
    had not settled when its training ended is listed in the report and warned about here."""
    from gba_lens.experiments.compare import report

    if cfg.preset == "synthbench":
        from gba_lens.experiments.compare.synthbench import run_synthbench

        results = run_synthbench(cfg, progress=progress)
    else:
        from gba_lens.experiments.compare.lm_frontier import run_lm_frontier

        results = run_lm_frontier(cfg, progress=progress)
    results["config"] = {k: v for k, v in vars(cfg).items()}
    results["files"] = report.write(results, Path(cfg.out))
    unsettled = report.unsettled_runs(results)  # each run's own warning was held back while it trained
    if unsettled:
        several = len(unsettled) > 1
        runs = f"{len(unsettled)} GBA run{'s' if several else ''} ended before {'their' if several else 'its'} L0 settled"
        warnings.warn(f"compare --preset {cfg.preset}: {runs} (listed in {results['files']['md']}):\n"
                      + "\n".join(f"  {line}" for line in unsettled), stacklevel=2)
    if cfg.wandb_project:
        report.log_wandb(results, cfg.wandb_project)
    return results
