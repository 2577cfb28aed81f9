"""The synthetic experiments: the paper's toy table, SAELens synthetic models, resonance sweep.

Every method is trained by the same harness (:func:`gba_lens.training.train.train_sae`) on the
same seeded batches, and scored with the same metrics.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import multiprocessing
import os
import statistics
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gba_lens.synthetic.metrics import RecoveryResult, cross_seed_consistency, evaluate_on_synthetic
from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
from gba_lens.training.data import SeededBatches
from gba_lens.training.methods import build_sae
from gba_lens.training.train import TrainConfig, train_sae

logger = logging.getLogger(__name__)


@dataclass
class MethodSpec:
    """One row of a comparison: a label, a method name and its SAELens config parameters."""

    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    paper: tuple[float, float] | None = None  # the paper's FRR at tau 0.8 / 0.9, if reported


@dataclass
class RunRecord:
    label: str
    seed: int
    result: RecoveryResult
    seconds: float
    sae: Any = field(default=None, repr=False)  # only when the job ran in this process
    directions: torch.Tensor | None = field(default=None, repr=False)  # [width, d] decoder rows
    frequencies: torch.Tensor | None = field(default=None, repr=False)  # [width] on a fixed sample


def train_and_evaluate(
    spec: MethodSpec,
    model: Any,
    width: int,
    train: TrainConfig,
    seed: int,
    eval_samples: int = 20_000,
    consistency_samples: int = 0,
    stream_cache: list[torch.Tensor] | None = None,
) -> RunRecord:
    """Train one method on ``model``'s stream (seeded) and score it against the true features.

    With ``consistency_samples`` > 0 the record also carries the decoder directions and each
    neuron's firing frequency on a fixed sample (seed 999), for cross-seed consistency.
    ``stream_cache``: batches of this (model, seed, batch size) stream kept from an earlier run
    (see :class:`~gba_lens.training.data.SeededBatches`).
    """
    torch.manual_seed(seed)
    sae = build_sae(spec.method, model.feature_dict.hidden_dim, width, device=train.device, **dict(spec.params))
    cfg = TrainConfig(**{**asdict(train), "lr": spec.lr or train.lr})
    start = time.perf_counter()
    train_sae(sae, SeededBatches(model.sample, cfg.batch_size, seed=seed, cache=stream_cache), cfg)
    seconds = time.perf_counter() - start
    sae.eval()
    record = RunRecord(spec.label, seed, evaluate_on_synthetic(sae, model, n_samples=eval_samples), seconds, sae)
    if consistency_samples:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(999)
            x = model.sample(consistency_samples).to(sae.device)
            record.frequencies = (sae.encode(x) != 0).float().mean(0).cpu()
            record.directions = sae.W_dec.detach().cpu().clone()
    return record


# ------------------------------------------------------------------ jobs, in parallel processes
@dataclass
class Job:
    """One training run, described by picklable parts so that a worker process can run it."""

    spec: MethodSpec
    model_factory: Callable[..., Any]  # a module-level callable: model = model_factory(*model_args)
    model_args: tuple[Any, ...]
    width: int
    train: TrainConfig
    seed: int
    eval_samples: int = 20_000
    consistency_samples: int = 0
    share_stream: bool = False
    """Keep this job's sample stream in the process for the next job on the same stream (set by
    :func:`run_jobs` when several jobs share one)."""

    def stream_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys train on the same batches (same model, seed and batch size)."""
        factory = f"{self.model_factory.__module__}.{self.model_factory.__qualname__}"
        return factory, repr(self.model_args), self.seed, self.train.batch_size, self.train.device


# The streams kept in this process, most recently used last. The methods of one seed train on the
# same stream, so keeping it spares the later runs the sampling (~14% of a paper-toy GBA step).
# Two streams cover the seed-major job order with two workers; a 1M x 42 stream is ~170 MB.
_STREAMS: OrderedDict[tuple[Any, ...], list[torch.Tensor]] = OrderedDict()
STREAMS_KEPT = 2


def _stream_cache(key: tuple[Any, ...]) -> list[torch.Tensor]:
    cache = _STREAMS.setdefault(key, [])
    _STREAMS.move_to_end(key)
    while len(_STREAMS) > STREAMS_KEPT:
        _STREAMS.popitem(last=False)
    return cache


def run_job(job: Job) -> RunRecord:
    model = job.model_factory(*job.model_args)
    cache = _stream_cache(job.stream_key()) if job.share_stream else None
    return train_and_evaluate(job.spec, model, job.width, job.train, job.seed, job.eval_samples,
                              job.consistency_samples, stream_cache=cache)


def _worker_init(threads: int) -> None:
    import warnings

    from sae_lens.training import sae_trainer

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    # The parent draws one bar over the jobs. SAELens's SAETrainer.fit always draws its own
    # "Training SAE" bar, which from several workers interleaves on the parent's terminal; fit has
    # no switch for it, so each worker (only) gives that module a disabled tqdm.
    sae_trainer.tqdm = functools.partial(sae_trainer.tqdm, disable=True)


def _run_job_in_worker(job: Job) -> RunRecord:
    record = run_job(job)
    record.sae = None  # the SAE stays in the worker; directions/frequencies travel back
    return record


def default_workers(n_jobs: int, device: str = "cpu") -> int:
    """One process per core on CPU (each with one torch thread); 1 on an accelerator."""
    if device != "cpu":
        return 1
    return max(1, min(n_jobs, os.cpu_count() or 1))


def run_jobs(jobs: Sequence[Job], workers: int | None = None, desc: str = "runs",
             progress: bool = True, start_method: str | None = None) -> list[RunRecord]:
    """Run ``jobs`` (in order of the result) in this process or in ``workers`` processes.

    Small synthetic SAEs use a multi-core CPU badly from one process (their GEMMs are thin), so
    one single-threaded process per core is about 1.7x faster on 2 cores than one process with 2
    threads. Every job seeds itself, so the numbers do not depend on ``workers`` beyond
    floating-point summation order. Jobs on the same stream (the methods of one seed) share its
    batches within a process (:attr:`Job.share_stream`), which changes no number.

    ``start_method`` (None = auto): ``fork`` when each worker runs one torch thread on CPU, which
    saves every worker the ~10 s import of SAELens / TransformerLens (3-4% of the paper-toy
    table); ``spawn`` otherwise, because a forked child that opens an OpenMP parallel region after
    the parent already has (several torch threads) can hang, and CUDA cannot be forked.
    """
    keys = [job.stream_key() for job in jobs]
    shared = Counter(keys)
    jobs = [replace(job, share_stream=shared[key] > 1) for job, key in zip(jobs, keys)]
    device = jobs[0].train.device if jobs else "cpu"
    workers = default_workers(len(jobs), device) if workers is None else workers
    if workers <= 1 or len(jobs) <= 1:
        try:
            return [run_job(job) for job in tqdm(jobs, desc=desc, disable=not progress)]
        finally:
            _STREAMS.clear()  # a worker's streams go with its process; free this one's too
    threads = max(1, (os.cpu_count() or 1) // workers)
    if start_method is None:
        forkable = "fork" in multiprocessing.get_all_start_methods()
        start_method = "fork" if threads == 1 and device == "cpu" and forkable else "spawn"
    context = multiprocessing.get_context(start_method)
    records: list[RunRecord | None] = [None] * len(jobs)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_run_job_in_worker, job): i for i, job in enumerate(jobs)}
        for future in tqdm(as_completed(futures), total=len(jobs), desc=f"{desc} ({workers} processes)",
                           disable=not progress):
            records[futures[future]] = future.result()
    return [r for r in records if r is not None]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(records: Sequence[RunRecord], specs: Sequence[MethodSpec]) -> list[dict[str, Any]]:
    """Mean and spread (sample std) over seeds, one row per method."""
    rows = []
    for spec in specs:
        runs = [r for r in records if r.label == spec.label]
        if not runs:
            continue
        row: dict[str, Any] = {"method": spec.label, "seeds": len(runs)}
        for metric in ("frr_08", "frr_09", "mcc", "f1", "l0", "explained_variance", "dead_fraction"):
            row[metric], row[metric + "_std"] = _mean_std([getattr(r.result, metric) for r in runs])
        row["true_l0"] = runs[0].result.true_l0
        row["seconds"] = statistics.fmean(r.seconds for r in runs)
        if spec.paper is not None:
            row["paper_frr_08"], row["paper_frr_09"] = spec.paper
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- paper toy
@dataclass
class PaperToySetup:
    """Sizes and schedule of the paper-toy reproduction (n = 128, d = 42, s in {3, 20})."""

    width: int = 1024
    samples: int = 1_000_000
    batch_size: int = 512
    lr: float = 3e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    eval_samples: int = 20_000
    data_seed: int = 0
    device: str = "cpu"
    """Torch device for the data and the SAEs (on an accelerator the runs go one at a time)."""
    covering_range: tuple[float, float] = (0.1, 0.03)
    """GBA targets (HTF, LTF) of the "range covers f" row: f = 0.09 at the top, every group within
    3.3x of it. Wider ranges cover f too, with fewer neurons near it (FRR % at tau 0.8 / 0.9, 3
    seeds): 0.1 ... 0.01 99.0 / 98.7, the library's defaults 0.1 ... 1e-3 97.4 / 96.9 (README)."""


# The paper's TopK baseline selects the top k of the plain pre-activations. SAELens's TopK training
# class by default (since SAELens PR #565, after the paper) multiplies each pre-activation by its
# decoder row's norm before the selection. On this toy that default lets a few latents with growing
# decoder norms win every selection: 40-70% of the latents die and FRR is 0-4% at every k (1M samples),
# against 90% / 64% / 21% at tau 0.8 for k = 20 / 30 / 50 with the selection on the plain
# pre-activations. The toy rows therefore turn the rescaling off (still SAELens's own class).
PAPER_TOPK = {"rescale_acts_by_decoder_norm": False}

# The paper's data X = H V has no offset: its mean input is a mix of features, not a bias. Every toy
# row therefore runs without a pre-bias (b_pre = b_dec fixed at 0, see ``build_sae``). A pre-bias
# (GBA: centred at the data mean and trained; SAELens's baselines: trained from 0) cost recovery here
# (FRR % at tau 0.8 / 0.9, 3 seeds, with -> without): GBA range 0.1 ... 0.01 100 / 94.5 -> 99.0 / 98.7,
# range 0.1 ... 1e-3 97.9 / 93.0 -> 97.4 / 96.9; TopK k = 20 90.6 / 45.1 -> 97.1 / 71.6.
PAPER_TOY_SAE = {"zero_pre_bias": True}


def paper_toy_methods(covering_range: tuple[float, float] | None = None) -> list[MethodSpec]:
    """The rows of the paper's table. Feature frequency here is f = 11.5 / 128 = 0.09."""
    htf, ltf = covering_range or PaperToySetup.covering_range
    return [
        MethodSpec("TopK K=20", "topk", {"k": 20, **PAPER_TOPK, **PAPER_TOY_SAE}, paper=(1.000, 0.984)),
        MethodSpec("TopK K=30", "topk", {"k": 30, **PAPER_TOPK, **PAPER_TOY_SAE}, paper=(0.984, 0.242)),
        MethodSpec("TopK K=50", "topk", {"k": 50, **PAPER_TOPK, **PAPER_TOY_SAE}, paper=(0.945, 0.234)),
        # Covering: targets geometric from HTF to LTF (K = 10) that span f.
        MethodSpec(f"GBA, range covers f ({htf:g} … {ltf:g})", "gba",
                   {"highest_target": htf, "lowest_target": ltf, **PAPER_TOY_SAE}, paper=(1.0, 1.0)),
        # Missing: every target far below f = 0.09 (0.01 down to 1e-4).
        MethodSpec("GBA, range misses f (0.01 … 1e-4)", "gba",
                   {"highest_target": 1e-2, "lowest_target": 1e-4, **PAPER_TOY_SAE}, paper=(0.383, 0.039)),
    ]


def run_paper_toy(
    setup: PaperToySetup | None = None,
    methods: Sequence[MethodSpec] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[list[dict[str, Any]], list[RunRecord]]:
    setup = setup or PaperToySetup()
    methods = list(methods or paper_toy_methods(setup.covering_range))
    train = TrainConfig(total_samples=setup.samples, batch_size=setup.batch_size, lr=setup.lr,
                        device=setup.device)
    # One dictionary V (data seed 0); the seeds vary the SAE initialisation and the sample stream,
    # so SAEs of different seeds can be compared neuron by neuron (cross-seed consistency).
    model_cfg = SparseMixtureConfig(seed=setup.data_seed)
    jobs = [Job(spec, SparseMixtureModel, (model_cfg, setup.device), setup.width, train, seed,
                setup.eval_samples, consistency_samples=5_000)
            for seed, spec in itertools.product(setup.seeds, methods)]
    records = run_jobs(jobs, workers, desc="paper toy", progress=progress)
    rows = summarise(records, methods)
    add_consistency(rows, records, alphas=(1.0, 0.1))
    return rows, records


def add_consistency(rows: list[dict[str, Any]], records: Sequence[RunRecord],
                    alphas: Sequence[float] = (1.0, 0.1)) -> None:
    """Mean over seed pairs of the share of the top-alpha most active neurons whose best match in
    the other seed's SAE has cosine > 0.9 (the paper's feature consistency)."""
    for row in rows:
        runs = [r for r in records if r.label == row["method"] and r.directions is not None]
        if len(runs) < 2:
            continue
        for alpha in alphas:
            values = [
                cross_seed_consistency(a.directions, b.directions, a.frequencies, alpha=alpha)
                for i, a in enumerate(runs) for j, b in enumerate(runs) if i != j
            ]
            row[f"consistency_{alpha:g}"] = statistics.fmean(values)


# ------------------------------------------------------------------------- tables and files
def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as a markdown table; a column ``key`` with ``key_std`` prints as mean ± std."""
    header = "| " + " | ".join(title for _, title in columns) + " |"
    lines = [header, "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key, "")
            if isinstance(value, float):
                pct = key.startswith(("frr", "paper_frr"))
                fmt = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}")
                cell = fmt(value)
                if key + "_std" in row and row.get("seeds", 1) > 1:
                    cell += f" ± {fmt(row[key + '_std'])}" if not pct else f" ± {100 * row[key + '_std']:.1f}"
                cells.append(cell)
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAPER_TOY_COLUMNS = [
    ("method", "method"),
    ("frr_08", "FRR τ=0.8"),
    ("paper_frr_08", "paper τ=0.8"),
    ("frr_09", "FRR τ=0.9"),
    ("paper_frr_09", "paper τ=0.9"),
    ("mcc", "MCC"),
    ("l0", "L0"),
    ("explained_variance", "expl. var."),
    ("dead_fraction", "dead"),
    ("consistency_1", "consistency (all)"),
    ("consistency_0.1", "consistency (top 10%)"),
]


def write_results(out_dir: Path | None, name: str, rows: list[dict[str, Any]], table: str, config: Any) -> None:
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps({"config": config, "rows": rows}, indent=2, default=str))
    (out_dir / f"{name}.md").write_text(table + "\n")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def plot_paper_toy(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """FRR at tau 0.8 and 0.9 per method (mean and std over seeds), the paper's values as markers."""
    plt = _pyplot()
    labels = [r["method"] for r in rows]
    y = range(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.55 * len(rows) + 1.4), sharey=True)
    for ax, metric, tau in zip(axes, ("frr_08", "frr_09"), (0.8, 0.9)):
        ax.barh(list(y), [100 * r[metric] for r in rows], xerr=[100 * r.get(metric + "_std", 0) for r in rows],
                capsize=3, color="tab:blue", label="gba_lens (mean ± std)")
        paper = [(i, 100 * r[f"paper_{metric}"]) for i, r in enumerate(rows) if r.get(f"paper_{metric}") is not None]
        if paper:
            ax.scatter([v for _, v in paper], [i for i, _ in paper], marker="D", color="black", zorder=3,
                       label="paper")
        ax.set_xlim(0, 105)
        ax.set_xlabel(f"FRR at τ = {tau} (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(y), labels)
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save_figure(fig, path)


def plot_zipf(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """MCC per Zipf model: GBA at its defaults and with the lower top target, the best L1, BatchTopK."""
    plt = _pyplot()
    series = [("gba_mcc", "GBA (defaults)"), ("gba_low_mcc", f"GBA, HTF {ZIPF_LOW_HTF:g}"), ("l1_mcc", "best L1"),
              ("btk_mcc", "BatchTopK")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for j, (key, name) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r[key] for r in rows], width, yerr=[r.get(key + "_std", 0) for r in rows], capsize=2,
               label=name)
    ax.set_xticks(range(len(rows)), [r["method"].split(",")[0] for r in rows])
    ax.set_ylabel("MCC (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    ax.set_title(title, fontsize=10)
    _save_figure(fig, path)


# ------------------------------------------------------------- SAELens synthetic comparison
@dataclass
class ZipfConfig:
    """One SAELens ``SyntheticModel`` with Zipfian firing probabilities."""

    name: str
    num_features: int
    hidden_dim: int
    width: int
    max_prob: float = 0.2
    min_prob: float = 0.002


ZIPF_CONFIGS = (
    ZipfConfig("A: 256 feats, d 32, width 256", 256, 32, 256),
    ZipfConfig("B: 512 feats, d 64, width 384 (< feats)", 512, 64, 384),
    ZipfConfig("C: 1024 feats, d 64, width 512 (< feats)", 1024, 64, 512),
)


def zipf_model(cfg: ZipfConfig, seed: int, device: str = "cpu") -> Any:
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    return SyntheticModel(
        SyntheticModelConfig(
            num_features=cfg.num_features,
            hidden_dim=cfg.hidden_dim,
            firing_probability=ZipfianFiringProbabilityConfig(max_prob=cfg.max_prob, min_prob=cfg.min_prob),
            seed=seed,
        ),
        device=device,
    )


# The second GBA row of the Zipf comparison: a top target below the paper's 0.1 (README: on model A
# the default's top groups fire on rare features too; 0.03 removes that gap).
ZIPF_LOW_HTF = 0.03


def zipf_methods(true_l0: float, l1_coefficients: Sequence[float] = (0.1, 0.3, 1.0)) -> list[MethodSpec]:
    """GBA at its defaults (and with a lower top target) against SAELens's L1 (a small coefficient
    sweep) and BatchTopK (k = true L0, selection on the plain pre-activations)."""
    specs = [MethodSpec("GBA (defaults)", "gba", {}),
             MethodSpec(f"GBA (HTF {ZIPF_LOW_HTF:g})", "gba", {"highest_target": ZIPF_LOW_HTF})]
    specs += [MethodSpec(f"L1 coef {c:g}", "l1", {"l1_coefficient": c}) for c in l1_coefficients]
    # Selection on the plain pre-activations, as on the paper toy (PAPER_TOPK): with SAELens's
    # decoder-norm rescaling BatchTopK lost 0.10-0.15 MCC on models A and B (seed 0).
    specs.append(MethodSpec(f"BatchTopK k={true_l0:.1f}", "batchtopk", {"k": float(true_l0), **PAPER_TOPK}))
    return specs


def run_zipf_comparison(
    configs: Sequence[ZipfConfig] = ZIPF_CONFIGS,
    seeds: Sequence[int] = (0, 1, 2),
    samples: int = 1_000_000,
    batch_size: int = 1024,
    lr: float = 1e-2,
    decay_fraction: float = 0.3,
    l1_coefficients: Sequence[float] = (0.1, 0.3, 1.0),
    progress: bool = True,
    workers: int | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """MCC of GBA vs the best L1 and BatchTopK on each model (same width, samples, lr schedule).

    lr 1e-2 with a linear decay over the last 30% of steps was the best schedule found for both
    GBA and L1 on model A (lr 3e-3: GBA 0.69, L1 0.76; lr 1e-2: GBA 0.75, L1 0.86 at 1M samples).
    """
    train = TrainConfig(total_samples=samples, batch_size=batch_size, lr=lr,
                        lr_decay_steps=int(decay_fraction * samples / batch_size), device=device)
    table = []
    for zcfg in configs:
        jobs: list[Job] = []
        specs: list[MethodSpec] = []
        for seed in seeds:
            true_l0 = float(zipf_model(zcfg, seed).activation_generator.firing_probabilities.sum())
            specs = zipf_methods(true_l0, l1_coefficients)
            jobs += [Job(spec, zipf_model, (zcfg, seed, device), zcfg.width, train, seed, 20_000) for spec in specs]
        records = run_jobs(jobs, workers, desc=zcfg.name, progress=progress)
        rows = summarise(records, specs)
        for row in rows:
            row["config"] = zcfg.name
        best = {
            "gba": next(r for r in rows if r["method"] == "GBA (defaults)"),
            "gba_low": next(r for r in rows if r["method"].startswith("GBA (HTF")),
            "l1": max((r for r in rows if r["method"].startswith("L1")), key=lambda r: r["mcc"]),
            "batchtopk": next(r for r in rows if r["method"].startswith("BatchTopK")),
        }
        table.append({"config": zcfg.name, "rows": rows, "best": best})
    return table


def zipf_summary_rows(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in table:
        b = entry["best"]
        out.append({
            "method": entry["config"],
            "seeds": b["gba"]["seeds"],
            "gba_mcc": b["gba"]["mcc"], "gba_mcc_std": b["gba"]["mcc_std"],
            "gba_low_mcc": b["gba_low"]["mcc"], "gba_low_mcc_std": b["gba_low"]["mcc_std"],
            "l1_mcc": b["l1"]["mcc"], "l1_mcc_std": b["l1"]["mcc_std"], "l1_best": b["l1"]["method"],
            "btk_mcc": b["batchtopk"]["mcc"], "btk_mcc_std": b["batchtopk"]["mcc_std"],
            "gba_l0": b["gba"]["l0"], "true_l0": b["gba"]["true_l0"],
            "gba_ev": b["gba"]["explained_variance"], "l1_ev": b["l1"]["explained_variance"],
            "btk_ev": b["batchtopk"]["explained_variance"],
        })
    return out


ZIPF_COLUMNS = [
    ("method", "model"), ("gba_mcc", "GBA MCC"), ("gba_low_mcc", f"GBA HTF {ZIPF_LOW_HTF:g} MCC"), ("l1_mcc", "best L1 MCC"), ("l1_best", "best L1"),
    ("btk_mcc", "BatchTopK MCC"), ("gba_l0", "GBA L0"), ("true_l0", "true L0"),
    ("gba_ev", "GBA EV"), ("l1_ev", "L1 EV"), ("btk_ev", "BTK EV"),
]


# ------------------------------------------------------------------------- resonance sweep
@dataclass
class ResonanceSetup:
    """Single-group BA, target p swept against d, on the paper's model with uniform s."""

    n_features: int = 256
    sparsity: int = 4
    dims: tuple[int, ...] = (6, 12, 24, 48, 96)
    targets: tuple[float, ...] = (0.004, 0.008, 0.016, 0.031, 0.0625, 0.125, 0.25)
    width: int = 512
    samples: int = 200_000
    batch_size: int = 512
    lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"


def run_resonance_sweep(setup: ResonanceSetup | None = None, progress: bool = True,
                        workers: int | None = None) -> dict[str, Any]:
    setup = setup or ResonanceSetup()
    train = TrainConfig(total_samples=setup.samples, batch_size=setup.batch_size, lr=setup.lr,
                        device=setup.device)
    cells = list(itertools.product(range(len(setup.dims)), range(len(setup.targets))))
    jobs = [
        Job(MethodSpec("BA", "ba", {"target": setup.targets[j]}), SparseMixtureModel,
            (SparseMixtureConfig(n_features=setup.n_features, d=setup.dims[i], sparsities=(setup.sparsity,),
                                 sparsity_weights=(1.0,), seed=setup.seed), setup.device),
            setup.width, train, setup.seed, eval_samples=5_000)
        for i, j in cells
    ]
    grid = torch.zeros(len(setup.dims), len(setup.targets))
    for (i, j), rec in zip(cells, run_jobs(jobs, workers, desc="resonance sweep", progress=progress)):
        grid[i, j] = rec.result.frr_09
    f = setup.sparsity / setup.n_features
    return {"setup": asdict(setup), "f": f, "sqrt_n": setup.n_features ** 0.5, "frr_09": grid.tolist()}


def plot_resonance(result: dict[str, Any], path: Path) -> None:
    plt = _pyplot()

    setup, grid = result["setup"], torch.tensor(result["frr_09"])
    fig, ax = plt.subplots(figsize=(7, 4))
    im = ax.imshow(grid.numpy(), origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(setup["targets"])), [f"{t:g}" for t in setup["targets"]], rotation=45)
    ax.set_yticks(range(len(setup["dims"])), [str(d) for d in setup["dims"]])
    ax.set_xlabel(f"BA target frequency p   (feature frequency f = {result['f']:.3g})")
    ax.set_ylabel(f"d   (sqrt(n) = {result['sqrt_n']:.0f})")
    f_pos = float(torch.tensor(setup["targets"]).log().sub(torch.tensor(result["f"]).log()).abs().argmin())
    ax.axvline(f_pos, color="w", ls="--", lw=1)
    for (i, j), v in zip(itertools.product(range(grid.shape[0]), range(grid.shape[1])), grid.flatten().tolist()):
        ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=7)
    fig.colorbar(im, ax=ax, label="FRR (τ = 0.9)")
    ax.set_title(f"Resonance: single-group BA, n = {setup['n_features']}, s = {setup['sparsity']}")
    _save_figure(fig, path)
