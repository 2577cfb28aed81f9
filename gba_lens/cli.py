"""``gba-lens``: the command line. Each command's options are a dataclass; its attribute
docstrings are the ``--help`` text.

    gba-lens recover --preset paper-toy      the paper's imbalanced-toy table, beside the paper's
    gba-lens recover --preset zipf           GBA vs L1 / BatchTopK on SAELens synthetic models
    gba-lens recover --preset resonance      single-group BA: target p against d, FRR heatmap
    gba-lens train-activations --activations acts.safetensors --d-sae 4096
                                             train a GBA SAE on cached activations
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import simple_parsing

from gba_lens.saes.gba import GBAOptions


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
class TrainActivationsArgs(GBAOptions):
    """Train a GBA SAE on cached activations (safetensors file or SAELens activation cache)."""

    activations: str = ""
    """Path to a .safetensors file of [n, d_in] activations or a SAELens CacheActivationsRunner directory."""
    hook_name: str | None = None
    """Which cached hook to use, when the cache holds several."""
    d_sae: int = 4096
    """Number of SAE neurons."""
    epochs: float = 1.0
    """Passes over the cached activations."""
    batch_size: int = 1024
    """Activations per step."""
    lr: float = 3e-3
    """Adam learning rate."""
    device: str = "cpu"
    """Torch device."""
    out: str = "runs/gba_sae"
    """Output directory: checkpoints/ (resumable) and sae/ (plain SAELens format)."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints."""
    wandb_project: str | None = None
    """W&B project (offline-safe; never needs a login)."""
    seed: int = 0
    """Seed for initialisation and shuffling."""


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("sae_lens").setLevel(logging.ERROR)


def _log_to_wandb(project: str | None, name: str, table_md: str, rows: list, images: list[Path]) -> None:
    if project is None:
        return
    from gba_lens.training.train import finish_wandb, start_wandb

    if not start_wandb(project, name, {"command": name}):
        return
    try:
        import wandb

        if rows:
            columns = sorted({k for r in rows for k in r})
            wandb.log({f"{name}/table": wandb.Table(columns=columns, data=[[str(r.get(c, "")) for c in columns] for r in rows])})
        for img in images:
            wandb.log({f"{name}/{img.stem}": wandb.Image(str(img))})
        wandb.run.summary["table_markdown"] = table_md  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"W&B logging failed: {exc!r}")
    finally:
        finish_wandb()


def cmd_recover(args: RecoverArgs) -> int:
    from gba_lens.synthetic import experiments as ex
    from gba_lens.training.train import resolve_device

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.preset == "paper-toy":
        setup = ex.PaperToySetup(seeds=tuple(args.seeds), device=device)
        if args.quick:
            setup.samples, setup.eval_samples = 300_000, 5_000
        setup.samples = args.samples or setup.samples
        setup.width = args.width or setup.width
        setup.covering_range = args.covering_range or setup.covering_range
        rows, _ = ex.run_paper_toy(setup, workers=args.workers)
        table = ex.markdown_table(rows, ex.PAPER_TOY_COLUMNS)
        ex.write_results(out, "paper_toy", rows, table, asdict(setup))
        title = f"Paper toy (n=128, d=42, s∈{{3,20}}), width {setup.width}, {setup.samples:,} samples, seeds {list(setup.seeds)}"
        ex.plot_paper_toy(rows, out / "paper_toy_frr.png", title)
        images = [out / "paper_toy_frr.png"]
    elif args.preset == "zipf":
        configs = ex.ZIPF_CONFIGS[:1] if args.quick else ex.ZIPF_CONFIGS
        samples = args.samples or (200_000 if args.quick else 1_000_000)
        result = ex.run_zipf_comparison(configs, seeds=args.seeds, samples=samples, workers=args.workers,
                                        device=device)
        rows = ex.zipf_summary_rows(result)
        table = ex.markdown_table(rows, ex.ZIPF_COLUMNS)
        details = "\n\n".join(ex.markdown_table(e["rows"], [("method", "method"), ("mcc", "MCC"), ("l0", "L0"),
                              ("explained_variance", "EV"), ("dead_fraction", "dead")]) for e in result)
        ex.write_results(out, "zipf", rows, table + "\n\n" + details, {"samples": samples, "seeds": args.seeds})
        title = f"SAELens Zipfian synthetic models, {samples:,} samples, seeds {list(args.seeds)}"
        ex.plot_zipf(rows, out / "zipf_mcc.png", title)
        images = [out / "zipf_mcc.png"]
    else:
        setup = ex.ResonanceSetup(seed=args.seeds[0], device=device)
        if args.quick:
            setup.dims, setup.targets, setup.samples = (8, 48), (0.008, 0.031, 0.125), 100_000
        setup.samples = args.samples or setup.samples
        result = ex.run_resonance_sweep(setup, workers=args.workers)
        (out / "resonance.json").write_text(json.dumps(result, indent=2))
        ex.plot_resonance(result, out / "resonance.png")
        rows = [{"method": f"d={d}", **{f"p={p:g}": v for p, v in zip(setup.targets, r)}}
                for d, r in zip(setup.dims, result["frr_09"])]
        table = ex.markdown_table(rows, [("method", "d")] + [(f"p={p:g}", f"p={p:g}") for p in setup.targets])
        (out / "resonance.md").write_text(table + "\n")
        images = [out / "resonance.png"]
        title = f"Resonance sweep (FRR τ=0.9), n={setup.n_features}, s={setup.sparsity}, f={result['f']:.3g}"
    print(f"\n{title}\n\n{table}\n\n({time.perf_counter() - start:.0f} s; results in {out}/)")
    _log_to_wandb(args.wandb_project, f"recover-{args.preset}", table, rows, images)
    return 0


def cmd_train_activations(args: TrainActivationsArgs) -> int:
    import torch

    from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
    from gba_lens.training.data import TensorBatches, load_activations
    from gba_lens.training.train import TrainConfig, train_sae

    if not args.activations:
        print("error: --activations is required", file=sys.stderr)
        return 2
    acts = load_activations(args.activations, args.hook_name)
    torch.manual_seed(args.seed)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=acts.shape[1], d_sae=args.d_sae, device=args.device,
                                              **args.gba_options()))
    out = Path(args.out)
    total = int(args.epochs * acts.shape[0]) // args.batch_size * args.batch_size
    cfg = TrainConfig(total_samples=total, batch_size=args.batch_size, lr=args.lr, device=args.device,
                      checkpoint_dir=str(out / "checkpoints"), checkpoint_every=args.checkpoint_every,
                      wandb_project=args.wandb_project)
    train_sae(sae, TensorBatches(acts, args.batch_size, seed=args.seed), cfg)
    sae.eval()
    with torch.no_grad():
        sample = acts[: min(len(acts), 20_000)].to(args.device)
        feats = sae.encode(sample)
        recon = sae.decode(feats)
        nmse = ((recon - sample).pow(2).sum(-1).mean() / (sample - sample.mean(0)).pow(2).sum(-1).mean()).item()
        fired = (feats != 0).float().mean(0)
    per_group = sae.bias_adaptation.group_frequencies(fired).tolist()
    targets = sae.bias_adaptation.group_targets.tolist()
    sae.save_inference_model(out / "sae")
    print(f"NMSE {nmse:.4f}  L0 {(feats != 0).float().sum(-1).mean():.2f}  dead {(fired == 0).float().mean():.3f}")
    print("group  target     frequency")
    for k, (t, f) in enumerate(zip(targets, per_group)):
        print(f"{k:5d}  {t:.2e}   {f:.2e}")
    print(f"saved a SAELens SAE to {out / 'sae'} (load with sae_lens.SAE.load_from_disk)")
    return 0


def build_parser() -> simple_parsing.ArgumentParser:
    parser = simple_parsing.ArgumentParser(
        prog="gba-lens", description="Group Bias Adaptation SAEs for SAELens / TransformerLens."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=simple_parsing.ArgumentParser)
    dashes = {"add_option_string_dash_variants": simple_parsing.DashVariant.UNDERSCORE_AND_DASH}
    sub.add_parser("recover", help=RecoverArgs.__doc__, description=RecoverArgs.__doc__,
                   **dashes).add_arguments(RecoverArgs, dest="args")
    sub.add_parser("train-activations", help=TrainActivationsArgs.__doc__, description=TrainActivationsArgs.__doc__,
                   **dashes).add_arguments(TrainActivationsArgs, dest="args")
    _extend_parser(sub)
    return parser


def _extend_parser(sub: object) -> None:
    """Commands that need a language model (``gba-lens train``) register here when available."""
    try:
        from gba_lens.lm_cli import register  # noqa: PLC0415
    except ImportError:
        return
    register(sub)


COMMANDS = {"recover": cmd_recover, "train-activations": cmd_train_activations}


def main(argv: list[str] | None = None) -> int:
    _quiet()
    parser = build_parser()
    ns = parser.parse_args(argv)
    handler = COMMANDS.get(ns.command) or getattr(ns, "handler", None)
    if handler is None:
        parser.error(f"unknown command {ns.command}")
    return int(handler(ns.args) or 0)


if __name__ == "__main__":
    sys.exit(main())
