"""``gba-lens recover``: the synthetic feature-recovery experiments of :mod:`gba_lens.experiments`.

    gba-lens recover --preset paper-toy      the paper's imbalanced-toy table, beside the paper's
    gba-lens recover --preset zipf           GBA vs L1 / BatchTopK on SAELens synthetic models
    gba-lens recover --preset resonance      single-group BA: target p against d, FRR heatmap

Each preset writes a markdown table, a JSON file and a PNG figure to ``--out``, prints the table,
and with ``--wandb-project`` logs them to W&B.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from gba_lens.cli.command import Command


@dataclass
class RecoverArgs:
    """Synthetic feature-recovery experiments."""

    preset: Literal["paper-toy", "zipf", "resonance"] = "paper-toy"
    """Which experiment: the paper's imbalanced toy, SAELens Zipfian models, or the BA resonance sweep."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds (data model and SAE initialisation) to average over."""
    samples: int | None = None
    """Training samples per run (default: the preset's)."""
    width: int | None = None
    """SAE width for paper-toy (default 1024)."""
    covering_range: tuple[float, float] | None = None
    """GBA targets HTF LTF of paper-toy's "range covers f" row (default 0.1 0.03; the library's
    defaults are 0.1 0.001)."""
    out: str = "runs/recover"
    """Directory for the table (markdown + JSON) and plots (PNG)."""
    wandb_project: str | None = None
    """Also log the result tables and plots to this W&B project (offline-safe)."""
    quick: bool = False
    """A small, fast version (for smoke tests and CI)."""
    workers: int | None = None
    """Training processes run at once (default: one per CPU core, one torch thread each; 1 runs
    everything in this process)."""
    device: str = "auto"
    """Torch device for the synthetic data and the SAEs (auto: cuda if available, else cpu). On an
    accelerator the runs go one at a time in this process."""


@dataclass
class _Report:
    """What a preset produced: the printed title and table, the rows and figures for W&B."""

    title: str
    table: str
    rows: list[Any]
    images: list[Path]


def _paper_toy(args: RecoverArgs, device: str, out: Path) -> _Report:
    from gba_lens.experiments import paper_toy
    from gba_lens.experiments.report import markdown_table, write_results

    setup = paper_toy.PaperToySetup(seeds=tuple(args.seeds), device=device)
    if args.quick:
        setup.samples, setup.eval_samples = 300_000, 5_000
    setup.samples = args.samples or setup.samples
    setup.width = args.width or setup.width
    setup.covering_range = args.covering_range or setup.covering_range
    rows, _ = paper_toy.run_paper_toy(setup, workers=args.workers)
    table = markdown_table(rows, paper_toy.PAPER_TOY_COLUMNS)
    write_results(out, "paper_toy", rows, table, asdict(setup))
    title = (f"Paper toy (n=128, d=42, s∈{{3,20}}), width {setup.width}, {setup.samples:,} samples, "
             f"seeds {list(setup.seeds)}")
    paper_toy.plot_paper_toy(rows, out / "paper_toy_frr.png", title)
    return _Report(title, table, rows, [out / "paper_toy_frr.png"])


def _zipf(args: RecoverArgs, device: str, out: Path) -> _Report:
    from gba_lens.experiments import zipf
    from gba_lens.experiments.report import markdown_table, write_results

    configs = zipf.ZIPF_CONFIGS[:1] if args.quick else zipf.ZIPF_CONFIGS
    samples = args.samples or (200_000 if args.quick else 1_000_000)
    result = zipf.run_zipf_comparison(configs, seeds=args.seeds, samples=samples, workers=args.workers,
                                      device=device)
    rows = zipf.zipf_summary_rows(result)
    table = markdown_table(rows, zipf.ZIPF_COLUMNS)
    details = "\n\n".join(markdown_table(e.rows, zipf.ZIPF_DETAIL_COLUMNS) for e in result)
    write_results(out, "zipf", rows, table + "\n\n" + details, {"samples": samples, "seeds": args.seeds})
    title = f"SAELens Zipfian synthetic models, {samples:,} samples, seeds {list(args.seeds)}"
    zipf.plot_zipf(rows, out / "zipf_mcc.png", title)
    return _Report(title, table, rows, [out / "zipf_mcc.png"])


def _resonance(args: RecoverArgs, device: str, out: Path) -> _Report:
    from gba_lens.experiments import resonance
    from gba_lens.experiments.report import markdown_table

    setup = resonance.ResonanceSetup(seed=args.seeds[0], device=device)
    if args.quick:
        setup.dims, setup.targets, setup.samples = (8, 48), (0.008, 0.031, 0.125), 100_000
    setup.samples = args.samples or setup.samples
    result = resonance.run_resonance_sweep(setup, workers=args.workers)
    (out / "resonance.json").write_text(json.dumps(result.as_dict(), indent=2))
    resonance.plot_resonance(result, out / "resonance.png")
    rows = result.rows()
    table = markdown_table(rows, result.columns())
    (out / "resonance.md").write_text(table + "\n")
    title = f"Resonance sweep (FRR τ=0.9), n={setup.n_features}, s={setup.sparsity}, f={result.f:.3g}"
    return _Report(title, table, rows, [out / "resonance.png"])


PRESETS = {"paper-toy": _paper_toy, "zipf": _zipf, "resonance": _resonance}


def cmd_recover(args: RecoverArgs) -> int:
    from gba_lens.experiments.report import log_to_wandb
    from gba_lens.training.train import resolve_device

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = PRESETS[args.preset](args, device, out)
    print(f"\n{report.title}\n\n{report.table}\n\n({time.perf_counter() - start:.0f} s; results in {out}/)")
    log_to_wandb(args.wandb_project, f"recover-{args.preset}", report.table, report.rows, report.images)
    return 0


COMMAND = Command("recover", RecoverArgs, cmd_recover)
