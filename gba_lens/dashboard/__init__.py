"""Feature dashboards: a static, offline site showing what every SAE feature does.

    from gba_lens.dashboard import build, show

    result = build(sae_or_dir, model, hook, tokens, "runs/dashboard")  # index.html + one page per feature
    show(result)                                                     # inline in Jupyter / Colab

``build`` makes one streaming pass over the tokens with the SAE attached (:mod:`.stream`,
:mod:`.collect`), adds weight-based summaries (:mod:`.logits`), and writes self-contained HTML
pages (:mod:`.data`, :mod:`.render`); ``gba-lens dashboard`` is :func:`run_dashboard`
(:mod:`.command`). W&B logging of a finished dashboard: :func:`log_dashboard_to_wandb`.
"""

from gba_lens.dashboard.build import DashboardResult, build, bundle_html, load_sae, show
from gba_lens.dashboard.collect import FeatureStats
from gba_lens.dashboard.command import DashboardConfig, run_dashboard
from gba_lens.dashboard.stream import collect
from gba_lens.dashboard.wandb_log import log_dashboard_to_wandb

__all__ = [
    "build",
    "show",
    "bundle_html",
    "load_sae",
    "collect",
    "DashboardResult",
    "FeatureStats",
    "DashboardConfig",
    "run_dashboard",
    "log_dashboard_to_wandb",
]
