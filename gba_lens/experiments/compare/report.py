"""The comparison's outputs: a markdown table, the JSON of every run, a PNG of the curves, W&B."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gba_lens.experiments.compare.methods import ALL_METHODS, LABELS
from gba_lens.experiments.report import log_l0_axis, pyplot, save_figure

COLOURS = {"gba_defaults": "black", "gba": "tab:red", "topk": "tab:gray", "batchtopk": "tab:blue",
           "matryoshka": "tab:green", "jumprelu": "tab:orange", "l1": "tab:purple", "matching_pursuit": "tab:brown"}


def _fmt(value: Any, std: Any = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text + (f" ± {std:.{digits}f}" if std else "")
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], with_std: bool = True) -> str:
    lines = ["| " + " | ".join(t for _, t in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_fmt(row.get(k), row.get(k + "_std") if with_std else None) for k, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _knob_text(row: dict[str, Any]) -> str:
    return f"{row['knob']} = {row['knob_value']:.4g}"


def unsettled_runs(results: dict[str, Any]) -> list[str]:
    """One line per GBA run whose L0 had not settled when its training ended (its ``l0_note``): where it
    ran, then the trainer's end-of-training line."""
    lines = []
    for run in (r for r in results["runs"] if r.get("l0_note")):
        knob = "" if run["knob"] == "none" else f" ({_knob_text(run)})"
        hook = f"{run['hook']}: " if "hook" in run else ""
        lines.append(f"{hook}{run['label']}{knob}, seed {run['seed']}: {run['l0_note']}")
    return lines


def _unsettled_section(results: dict[str, Any]) -> list[str]:
    lines = unsettled_runs(results)
    if not lines:
        return []
    return ["## GBA runs whose L0 had not settled when training ended", "",
            "Their points are where training stopped, not where their L0 would settle.", "",
            *(f"- {line}" for line in lines), ""]


# ---------------------------------------------------------------------------------- synthbench
SYNTH_COLUMNS = [("label", "method"), ("knob_text", "knob"), ("seeds", "seeds"), ("l0", "L0"), ("mcc", "MCC"), ("f1", "F1"),
                 ("precision", "precision"), ("recall", "recall"), ("uniqueness", "uniqueness"),
                 ("explained_variance", "expl. var."), ("dead_fraction", "dead")]


def synthbench_markdown(results: dict[str, Any], command: str) -> str:
    scale, pool = results["scale"], results["pool"]
    at = [{**r, "knob_text": _knob_text(r)} for r in results["at_true_l0"]]
    points = [{**r, "knob_text": _knob_text(r)} for r in results["points"]]
    interp = [("label", "method"), ("mcc_interp", "MCC at true L0 (interp.)"), ("f1_interp", "F1 at true L0"),
              ("explained_variance_interp", "EV at true L0")]
    pub = results["published_16k_at_l0_25"]
    pub_rows = [{"label": LABELS[m], "mcc": v["mcc"], "f1": v["f1"]} for m, v in pub.items()]
    trainer_rate = ", ".join(f"{LABELS[m]} {_rate(results, m)}" for m in dict.fromkeys(p["method"] for p in results["points"]))
    return "\n".join([
        f"# compare --preset synthbench: {scale['name']}",
        "",
        f"Command: `{command}`",
        "",
        f"Model: SAELens `SyntheticModel`, {scale['num_features']} features, d {scale['hidden_dim']}, "
        f"SAE width {scale['width']}, hierarchy {scale['roots']} roots x branching {scale['branching']} x depth "
        f"{scale['depth']}, low-rank correlation rank {scale['correlation_rank']}. True L0 {results['true_l0']:.2f} "
        f"(of the {scale['width']} most frequent features: {results['top_width_l0']:.2f}). "
        f"{scale['samples']:,} training samples per SAE, batch {scale['batch_size']}, lr {scale['lr']:g} "
        f"(linear decay over the last {scale['lr_decay_fraction']:.0%}), seeds {results['seeds']}, "
        f"{scale['eval_samples']:,} held-out samples.",
        "",
        f"Throughput: generator {pool['generator_samples_per_s']:,.0f} samples/s "
        f"(measured while drawing the pool of {pool['samples'] or 0:,}; "
        f"{'loaded from the cache' if pool['from_cache'] else 'drawn'} in {pool['seconds']:.0f} s here); "
        f"trainers (samples/s, one core, shared machine): {trainer_rate}.",
        "",
        "## At the true L0 (k = true L0; GBA at its defaults, and the paper's rule at its range 0.1 … 1e-3; penalties: the grid point nearest)",
        "",
        table(at, SYNTH_COLUMNS),
        "",
        table(at, interp, with_std=False),
        "",
        "## Every sweep point (mean ± std over seeds)",
        "",
        table(points, SYNTH_COLUMNS),
        "",
        "## SynthSAEBench-16k, published (L0 25)",
        "",
        table(pub_rows, [("label", "method"), ("mcc", "MCC"), ("f1", "F1")], with_std=False),
        "",
        *_unsettled_section(results),
    ])


def _rate(results: dict[str, Any], method: str) -> str:
    rates = [p["train_samples_per_s"] for p in results["points"] if p["method"] == method]
    return f"{sum(rates) / len(rates):,.0f}"


def plot_synthbench(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    panels = [("mcc", "MCC"), ("f1", "F1"), ("explained_variance", "explained variance"), ("uniqueness", "uniqueness")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (metric, title) in zip(axes, panels):
        for method in _methods(results["points"]):
            # A collapsed SAE (L0 < 0.1: every latent silent) is in the tables, not on the log axis.
            pts = sorted((p for p in results["points"] if p["method"] == method and p["l0"] >= 0.1),
                         key=lambda p: p["l0"])
            ax.errorbar([p["l0"] for p in pts], [p[metric] for p in pts], yerr=[p[metric + "_std"] for p in pts],
                        marker="o", ms=4, capsize=2, color=COLOURS[method], label=LABELS[method])
        ax.axvline(results["true_l0"], color="k", ls="--", lw=1, label="true L0")
        log_l0_axis(ax)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{results['scale']['name']}: {len(results['seeds'])} seeds (mean ± std)", fontsize=10)
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------- lm
LM_COLUMNS = [("label", "method"), ("knob_text", "knob"), ("l0", "L0"), ("ce_loss_score", "CE loss recovered"),
              ("kl_div_with_sae", "KL"), ("explained_variance", "expl. var."), ("dead_fraction", "dead"),
              ("dense_fraction", "dense > 10%"), ("train_seconds", "train s")]


def lm_markdown(results: dict[str, Any], command: str) -> str:
    parts = [f"# compare --preset lm: {results['model']} on {results['dataset']}", "", f"Command: `{command}`", ""]
    s = results["scale"]
    parts += [f"{s['train_tokens']:,} cached tokens per SAE (batch {s['batch_size']}, lr {s['lr']:g}, linear decay "
              f"over the last {s['lr_decay_fraction']:.0%}), seed {results['seed']}; evaluation on "
              f"{s['eval_tokens']:,} held-out tokens with SAELens's run_evals. Inputs scaled to mean norm "
              "sqrt(d_in) (SAELens's expected_average_only_in) for every method.", ""]
    for hook, info in results["hooks"].items():
        rows = sorted((r for r in results["runs"] if r["hook"] == hook),
                      key=lambda r: (ALL_METHODS.index(r["method"]), r["l0"]))
        parts += [f"## {hook} (d_in {info['d_in']}, width {info['width']})", "",
                  table([{**r, "knob_text": _knob_text(r)} for r in rows], LM_COLUMNS, with_std=False), ""]
    cols = [("hook", "hook"), ("label", "method")] + [
        (f"{m}@{l0}", f"{t} @ L0 {l0}") for l0 in (16, 32) for m, t in (("ce_loss_score", "CE rec."),
                                                                          ("explained_variance", "EV"))]
    parts += ["## The frontiers read at common L0s (interpolated in log L0; – outside a sweep's range)", "",
              table(results["frontier_at"], cols, with_std=False), ""]
    if results.get("defaults_against_frontiers"):
        gap_cols = [("hook", "hook"), ("label", "minus"), ("l0", "GBA's L0"), ("ce_loss_score_gap", "CE rec."),
                    ("explained_variance_gap", "EV")]
        gaps = [{**r, **{k: f"{r[k]:+.4f}" for k in ("ce_loss_score_gap", "explained_variance_gap")
                         if r[k] is not None}} for r in results["defaults_against_frontiers"]]
        parts += ["## GBA at its defaults minus each frontier at GBA's own L0 (≥ 0: on or above it; – outside "
                  "a sweep's range)", "", table(gaps, gap_cols, with_std=False), ""]
    return "\n".join(parts + _unsettled_section(results))


def plot_lm(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    hooks = list(results["hooks"])
    panels = [("ce_loss_score", "CE loss recovered"), ("explained_variance", "explained variance")]
    fig, axes = plt.subplots(len(hooks), len(panels), figsize=(5.2 * len(panels), 3.6 * len(hooks)), squeeze=False)
    for i, hook in enumerate(hooks):
        runs = [r for r in results["runs"] if r["hook"] == hook]
        for j, (metric, title) in enumerate(panels):
            ax = axes[i][j]
            for method in _methods(runs):
                pts = sorted((r for r in runs if r["method"] == method), key=lambda r: r["l0"])
                ax.plot([p["l0"] for p in pts], [p[metric] for p in pts], marker="o", ms=4, color=COLOURS[method],
                        label=LABELS[method])
            log_l0_axis(ax)
            ax.set_ylabel(title)
            ax.set_title(hook, fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{results['model']}: sparsity-fidelity frontiers", fontsize=10)
    save_figure(fig, path)


# ------------------------------------------------------------------------------------- writing
def command_line(results: dict[str, Any]) -> str:
    cfg = results.get("config", {})
    parts = ["gba-lens compare", f"--preset {results['preset']}"]
    for flag in ("quick", "full_16k"):
        if cfg.get(flag):
            parts.append("--" + flag.replace("_", "-"))
    if cfg.get("out"):
        parts.append(f"--out {cfg['out']}")
    return " ".join(parts)


def write(results: dict[str, Any], out: Path) -> dict[str, str]:
    """compare_<preset>.md / .json / .png in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"compare_{results['preset']}"
    paths = {ext: out / f"{name}.{ext}" for ext in ("md", "json", "png")}
    command = command_line(results)
    if results["preset"] == "synthbench":
        paths["md"].write_text(synthbench_markdown(results, command))
        plot_synthbench(results, paths["png"])
    else:
        paths["md"].write_text(lm_markdown(results, command))
        plot_lm(results, paths["png"])
    paths["json"].write_text(json.dumps({**results, "command": command}, indent=1, default=str))
    return {k: str(v) for k, v in paths.items()}


def log_wandb(results: dict[str, Any], project: str) -> bool:
    """The per-run metrics as a table, the summary and the figure; never raises."""
    from gba_lens.wandb_run import WandbGuard, finish_run, start_run

    config = {k: v for k, v in results.items() if k in ("preset", "scale", "train", "seeds", "model", "dataset")}
    if not start_run(project, name=f"compare-{results['preset']}", config=config):
        return False
    guard = WandbGuard(f"W&B logging of compare --preset {results['preset']}")
    try:
        with guard.catch("log results"):
            _log_results(results)
        return guard.enabled
    finally:
        finish_run()


def _log_results(results: dict[str, Any]) -> None:
    import wandb

    runs = results["runs"]
    keys = sorted({k for r in runs for k, v in r.items() if isinstance(v, (int, float, str))})
    wandb.log({"runs": wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in runs]),
               "curves": wandb.Image(results["files"]["png"])})
    for row in results.get("at_true_l0", []):
        wandb.run.summary[f"{row['method']}/mcc_at_true_l0"] = row["mcc"]


def _methods(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [m for m in ALL_METHODS if any(r["method"] == m for r in rows)]
