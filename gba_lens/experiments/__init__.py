"""The synthetic experiments, one module each, on a shared job runner.

* :mod:`~gba_lens.experiments.runs`: one run (a :class:`MethodSpec` trained and scored).
* :mod:`~gba_lens.experiments.runner`: many runs, in this process or a process pool.
* :mod:`~gba_lens.experiments.results`: typed rows aggregated over seeds.
* :mod:`~gba_lens.experiments.report`: markdown tables, result files, figures, W&B.
* :mod:`~gba_lens.experiments.gba_modes`: GBA's modes by name (the paper's rule pinned), for the studies.
* :mod:`~gba_lens.experiments.paper_toy`, :mod:`~gba_lens.experiments.zipf`,
  :mod:`~gba_lens.experiments.resonance`: the experiments (``gba-lens recover --preset ...``).

The data model and the metrics they use live in :mod:`gba_lens.synthetic`.
"""

from gba_lens.experiments.paper_toy import (
    PAPER_TOPK,
    PAPER_TOY_COLUMNS,
    PAPER_TOY_SAE,
    PaperToySetup,
    paper_toy_methods,
    plot_paper_toy,
    run_paper_toy,
)
from gba_lens.experiments.report import log_to_wandb, markdown_table, write_results
from gba_lens.experiments.resonance import ResonanceResult, ResonanceSetup, plot_resonance, run_resonance_sweep
from gba_lens.experiments.results import MeanStd, MethodSummary, add_consistency, summarise
from gba_lens.experiments.runner import Job, StreamCache, default_workers, run_job, run_jobs
from gba_lens.experiments.runs import MethodSpec, RunRecord, train_and_evaluate
from gba_lens.experiments.zipf import (
    ZIPF_COLUMNS,
    ZIPF_CONFIGS,
    ZIPF_DETAIL_COLUMNS,
    ZIPF_LOW_HTF,
    ZipfConfig,
    ZipfModelResult,
    ZipfSummary,
    plot_zipf,
    run_zipf_comparison,
    zipf_methods,
    zipf_model,
    zipf_summary_rows,
)

__all__ = [
    "PAPER_TOPK", "PAPER_TOY_COLUMNS", "PAPER_TOY_SAE", "PaperToySetup", "paper_toy_methods", "plot_paper_toy",
    "run_paper_toy", "log_to_wandb", "markdown_table", "write_results", "ResonanceResult", "ResonanceSetup",
    "plot_resonance", "run_resonance_sweep", "MeanStd", "MethodSummary", "add_consistency", "summarise", "Job",
    "StreamCache", "default_workers", "run_job", "run_jobs", "MethodSpec", "RunRecord", "train_and_evaluate",
    "ZIPF_COLUMNS", "ZIPF_CONFIGS", "ZIPF_DETAIL_COLUMNS", "ZIPF_LOW_HTF", "ZipfConfig", "ZipfModelResult",
    "ZipfSummary", "plot_zipf", "run_zipf_comparison", "zipf_methods", "zipf_model", "zipf_summary_rows",
]
