"""Log a finished dashboard to W&B: the site as an artifact, the index as a ``wandb.Html``.

Goes through :mod:`gba_lens.wandb_run` (mode rule, never raises); any W&B failure is one warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gba_lens.wandb_run import WandbGuard, finish_run, start_run

__all__ = ["log_dashboard_to_wandb"]


def log_dashboard_to_wandb(
    result: Any, project: str, run_name: str | None = None, max_features: int = 64
) -> bool:
    """Start a run in ``project``, log ``result`` (a :class:`DashboardResult`) and finish the run.

    The artifact (``type="dashboard"``) holds the site's files (HTML pages, dashboard.json); the run also
    gets ``dashboard`` (a ``wandb.Html`` of the index with up to ``max_features`` feature pages
    bundled in) and the summary numbers. Returns True when everything was logged.
    """
    from gba_lens.dashboard.build import bundle_html

    config = {"dashboard": {k: v for k, v in result.meta.items() if k not in ("pages", "steering")}}
    if not start_run(project, name=run_name, config=config, job_type="dashboard"):
        return False
    guard = WandbGuard("W&B dashboard logging")
    with guard.catch("log"):
        import wandb

        out_dir = Path(result.out_dir)
        artifact = wandb.Artifact(f"dashboard-{_safe(result.meta['hook'])}", type="dashboard", metadata=config["dashboard"])
        for path in sorted(out_dir.glob("*.html")) + [out_dir / "dashboard.json"]:
            artifact.add_file(str(path), name=path.name)  # the site only (not a cached SAE)
        wandb.log_artifact(artifact)
        summary = result.meta["summary"]
        wandb.log({
            "dashboard": wandb.Html(bundle_html(result, max_features=max_features), inject=False, data_is_not_path=True),
            "dashboard/alive": summary["alive"], "dashboard/dead": summary["dead"], "dashboard/dense": summary["dense"],
        })
    finish_run()
    return guard.enabled


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
