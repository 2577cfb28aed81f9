"""What a ``gba-lens train`` run returns and writes: :class:`LMTrainResults`, the saved SAEs,
``results.json`` / ``results.md`` and the final evaluation in W&B.

Output directory layout::

    OUT/results.json              every metric, per SAE, plus run settings and throughput
    OUT/results.md                the tables printed at the end
    OUT/group_frequencies.png     per-group firing frequency vs target, one panel per SAE
    OUT/<name>/                   the SAE (cfg.json, sae_weights.safetensors, sparsity, runner cfg)
    OUT/checkpoints/              resumable training checkpoints (safetensors + JSON)

``<name>`` is the hook name, with ``-w<width>`` appended when several widths are trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from gba_lens.compat import RUNNER_CFG_FILENAME, SPARSITY_FILENAME
from safetensors.torch import save_file

from gba_lens.saes.gba import GBATrainingSAE
from gba_lens.training.lm.evaluate import SAEEvalResult, group_table, summary_table
from gba_lens.training.lm.sources import LoadedModel, TokenSource
from gba_lens.wandb_run import WandbGuard

__all__ = ["PLOT_FILENAME", "RESULTS_FILENAME", "LMTrainResults", "log_results_to_wandb", "save_sae", "write_results"]

RESULTS_FILENAME = "results.json"
PLOT_FILENAME = "group_frequencies.png"


@dataclass
class LMTrainResults:
    """What :func:`train_gba_on_model` returns.

    Attributes:
        saes: ``{name: SAE}``, each loaded back from disk with plain ``sae_lens.SAE.load_from_disk``.
        training_saes: the trained ``GBATrainingSAE`` objects (with the bias controller).
        evals: ``{name: SAEEvalResult}``, held-out metrics.
        model: the model and what was recorded about it.
        out_dir, results_path, plot_path: where things were written.
        train_seconds, tokens_per_second: wall time of training (model passes included) and
            activation vectors consumed per second.
        hook_names: ``{name: hook_name}``.
        token_source, dataset_rows_used: the data, and how many dataset rows training consumed
            (see :func:`held_out_tokens`).
    """

    saes: dict[str, SAE[Any]]
    training_saes: dict[str, GBATrainingSAE]
    evals: dict[str, SAEEvalResult]
    model: LoadedModel
    out_dir: Path
    results_path: Path
    plot_path: Path
    train_seconds: float
    tokens_per_second: float
    hook_names: dict[str, str]
    token_source: TokenSource
    dataset_rows_used: int

    def table(self) -> str:
        """The summary and per-group tables, as printed by ``gba-lens train``."""
        parts = [summary_table(list(self.evals.values()))]
        parts += [group_table(r) for r in self.evals.values()]
        return "\n\n".join(parts)


def save_sae(sae: GBATrainingSAE, directory: Path, sparsity: torch.Tensor | None, runner_cfg: dict[str, Any]) -> None:
    """What SAELens's ``save_final_sae`` writes (minus its unguarded W&B artifact upload)."""
    directory.mkdir(parents=True, exist_ok=True)
    sae.save_inference_model(str(directory))
    if sparsity is not None:
        save_file({"sparsity": sparsity.detach().cpu().contiguous()}, str(directory / SPARSITY_FILENAME))
    (directory / RUNNER_CFG_FILENAME).write_text(json.dumps(runner_cfg, default=str))


def write_results(results: LMTrainResults, run_info: dict[str, Any]) -> None:
    """``results.json`` (``run_info`` plus every SAE's metrics and path) and ``results.md``."""
    payload = {
        **run_info,
        "saes": {name: {**r.to_dict(), "path": str(results.out_dir / name)} for name, r in results.evals.items()},
    }
    results.out_dir.mkdir(parents=True, exist_ok=True)
    results.results_path.write_text(json.dumps(payload, indent=2, default=str))
    (results.out_dir / "results.md").write_text(results.table() + "\n")


def log_results_to_wandb(results: LMTrainResults) -> None:
    """Final metrics, group table and plot into the open W&B run; a failure is one warning."""
    with WandbGuard().catch("final evaluation"):
        import wandb

        if wandb.run is None:
            return
        flat: dict[str, Any] = {}
        for name, r in results.evals.items():
            for key, value in r.metrics.items():
                flat[f"final_eval/{name}/{key}"] = value
            rows = [[k, t, f] for k, (t, f) in enumerate(zip(r.group_targets, r.group_frequencies))]
            flat[f"final_eval/{name}/groups"] = wandb.Table(columns=["group", "target", "frequency"], data=rows)
        flat["final_eval/group_frequencies"] = wandb.Image(str(results.plot_path))
        flat["final_eval/tokens_per_second"] = results.tokens_per_second
        wandb.log(flat)
        for key, value in flat.items():
            if isinstance(value, (int, float)):
                wandb.run.summary[key] = value
