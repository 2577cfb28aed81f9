"""``gba-lens compare --preset synthbench``: GBA and SAELens's architectures on a SynthSAEBench-
structured ground truth, each method a curve (MCC, F1, ... against L0) over its sparsity knob.

Every method trains on the same cached sample pool (:mod:`.pool`) with the same harness
(:func:`gba_lens.training.train.train_sae`: SAELens's trainer loop, Adam, one learning-rate
schedule), is converted to its inference SAE as SAELens deploys it, and is scored by SAELens's
``eval_sae_on_synthetic_data`` on the same held-out samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sae_lens
import torch
from sae_lens.synthetic import eval_sae_on_synthetic_data
from tqdm.auto import tqdm

from gba_lens.experiments.compare import methods as M
from gba_lens.experiments.compare.config import CompareConfig
from gba_lens.experiments.compare.pool import (
    DEFAULT_SCALE,
    FULL_16K_SCALE,
    QUICK_SCALE,
    SamplePool,
    SynthScale,
    load_or_build_pool,
    pool_key,
    top_width_l0,
)
from gba_lens.data import SeededBatches, TensorBatches
from gba_lens.training.train import TrainConfig, resolve_device

SYNTH_METHODS = ("gba_defaults", "gba", "batchtopk", "matryoshka", "jumprelu", "l1", "matching_pursuit")
#: The sweep around the true L0, as multiples of it (k-methods) and GBA's target-range factors.
L0_MULTIPLES = (0.5, 1.0, 2.0)
GBA_SCALES = (0.5, 1.0, 2.0)
#: Starting grids of the penalty coefficients (extended until their L0s bracket the true L0).
PENALTY_GRIDS = {"jumprelu": (3.0, 10.0, 30.0), "l1": (2.0, 4.0, 8.0)}
#: Extra coefficients tried at most per penalty method to bracket the true L0.
MAX_EXTENSIONS = 4
#: SynthSAEBench-16k's published results at L0 25 (MCC, F1), for the ordering check.
PUBLISHED_16K = {"matryoshka": (0.793, 0.879), "batchtopk": (0.757, 0.732), "jumprelu": (0.753, 0.732),
                 "matching_pursuit": (0.693, 0.446), "l1": (0.604, 0.556)}
METRICS = ("mcc", "f1", "precision", "recall", "uniqueness", "explained_variance", "l0", "dead_fraction",
           "shrinkage")


def resolve_scale(cfg: CompareConfig) -> SynthScale:
    scale = FULL_16K_SCALE if cfg.full_16k else QUICK_SCALE if cfg.quick else DEFAULT_SCALE
    changes: dict[str, Any] = {}
    if cfg.samples is not None:  # the pool stays (and is reused): a longer run takes epochs over it
        changes["samples"] = cfg.samples
    if cfg.lr is not None:
        changes["lr"] = cfg.lr
    if cfg.width is not None:
        changes["width"] = cfg.width
    return dataclasses.replace(scale, **changes) if changes else scale


def train_config(scale: SynthScale, device: str) -> TrainConfig:
    steps = scale.samples // scale.batch_size
    return TrainConfig(total_samples=scale.samples, batch_size=scale.batch_size, lr=scale.lr,
                       lr_decay_steps=int(scale.lr_decay_fraction * steps), device=device)


def evaluate(sae: Any, pool: SamplePool, n_samples: int) -> dict[str, float]:
    """SAELens's synthetic evals of the inference SAE on the pool's held-out samples."""
    inference = M.to_inference(sae)
    res = eval_sae_on_synthetic_data(inference, pool.model.feature_dict, pool.replay(),  # type: ignore[arg-type]
                                     num_samples=n_samples, batch_size=min(n_samples, 4096))
    return {
        "mcc": res.mcc, "f1": res.classification.f1_score, "precision": res.classification.precision,
        "recall": res.classification.recall, "uniqueness": res.uniqueness,
        "explained_variance": res.explained_variance, "l0": res.sae_l0, "true_l0": res.true_l0,
        "dead_fraction": res.dead_latents / sae.cfg.d_sae, "shrinkage": res.shrinkage,
    }


def _data(pool: SamplePool, scale: SynthScale, seed: int) -> Any:
    if pool.train is not None:
        return TensorBatches(pool.train, scale.batch_size, seed=seed)
    return SeededBatches(pool.model.sample, scale.batch_size, seed=seed)


def _run(variant: M.Variant, pool: SamplePool, scale: SynthScale, train: TrainConfig, seed: int) -> dict[str, Any]:
    sae, seconds, l0_note = M.train_variant(variant, _data(pool, scale, seed), scale.hidden_dim, scale.width, train,
                                            seed)
    record: dict[str, Any] = {"method": variant.method, "label": variant.label, "knob": M.KNOBS[variant.method],
                              "knob_value": variant.knob, "seed": seed, "train_seconds": seconds,
                              "train_samples_per_s": scale.samples / max(seconds, 1e-9), "l0_note": l0_note}
    record |= evaluate(sae, pool, scale.eval_samples)
    return record


def initial_sweep(method: str, true_l0: float) -> list[M.Variant]:
    if method == "gba_defaults":
        return M.defaults_point()
    if method == "gba":
        return M.gba_sweep(GBA_SCALES)
    if method in M.PENALTY_METHODS:
        return M.penalty_sweep(method, PENALTY_GRIDS[method])
    return M.l0_knob_sweep(method, [true_l0 * m for m in L0_MULTIPLES])


def run_synthbench(cfg: CompareConfig, progress: bool = True, scale: SynthScale | None = None,
                   train_missing: bool = True) -> dict[str, Any]:
    """Train and score every method's sweep over the seeds; returns the JSON-ready results.
    ``scale`` replaces the preset's sizes (tests, custom studies). ``train_missing=False``
    reports only the runs already in the journal (e.g. while other processes train more seeds)."""
    device = resolve_device(cfg.device)
    scale = scale or resolve_scale(cfg)
    seeds = cfg.resolved_seeds()
    methods = list(cfg.methods or SYNTH_METHODS)
    for m in methods:
        if m not in M.ALL_METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {M.ALL_METHODS}")
    cache = cfg.cache_dir or f"{cfg.out}/cache"
    t0 = time.perf_counter()
    pool = load_or_build_pool(scale, cache, device=device)
    pool_seconds = time.perf_counter() - t0
    true_l0 = pool.true_l0
    train = train_config(scale, device)
    sweeps = {m: initial_sweep(m, true_l0) for m in methods}
    runs: list[dict[str, Any]] = []
    bar = tqdm(total=sum(len(v) for v in sweeps.values()) * len(seeds), desc="synthbench runs", disable=not progress)
    # Every finished run is appended to a journal keyed by the pool, the schedule and the code, so an
    # interrupted comparison restarted with the same settings and code skips the runs it already has.
    journal = Path(cfg.out) / "compare_synthbench.runs.jsonl"
    journal_key = (f"{pool_key(scale, 0)}-{scale.samples}-{scale.batch_size}-{scale.lr:g}-{scale.width}-"
                   f"{code_version()}")
    kept = _read_journal(journal, journal_key)

    def run(variant: M.Variant, seed: int) -> dict[str, Any] | None:
        bar.set_postfix_str(f"{variant.key} seed {seed}")
        rec = kept.get((variant.method, variant.knob, seed))
        if rec is None and not train_missing:
            bar.update()
            return None
        if rec is None:
            rec = _run(variant, pool, scale, train, seed)
            journal.parent.mkdir(parents=True, exist_ok=True)
            with journal.open("a") as f:
                f.write(json.dumps({"key": journal_key, **rec}) + "\n")
        runs.append(rec)
        bar.update()
        return rec

    # Penalty methods: seed 0 first, extending the grid until its L0s bracket the true L0
    # (0.7x ... 1.4x); the other seeds then train the final grid.
    for m in methods:
        if m not in M.PENALTY_METHODS:
            continue
        first = [r for r in (run(v, seeds[0]) for v in sweeps[m]) if r is not None]
        for _ in range(0 if cfg.quick else MAX_EXTENSIONS):
            nxt = M.extend_grid([r["knob_value"] for r in first], [r["l0"] for r in first],
                                0.7 * true_l0, 1.4 * true_l0)
            if nxt is None:
                break
            bar.total += len(seeds)
            sweeps[m].append(M.Variant(m, nxt))
            rec = run(sweeps[m][-1], seeds[0])
            if rec is None:
                break
            first.append(rec)
    done = {(r["method"], r["knob_value"], r["seed"]) for r in runs}
    for seed in seeds:
        for m in methods:
            for v in sweeps[m]:
                if (m, v.knob, seed) not in done:
                    run(v, seed)
    bar.close()
    points = aggregate(runs)
    return {
        "preset": "synthbench",
        "scale": dataclasses.asdict(scale),
        "model_config": pool.model.cfg.to_dict(),
        "seeds": seeds,
        "true_l0": true_l0,
        "top_width_l0": top_width_l0(pool.eval_features, scale.width),
        "pool": {"directory": str(pool.directory), "from_cache": pool.from_cache, "seconds": pool_seconds,
                 "generator_samples_per_s": pool.generator_samples_per_s,
                 "samples": scale.pool_samples},
        "train": dataclasses.asdict(train),
        "runs": runs,
        "points": points,
        "at_true_l0": at_true_l0(points, runs, true_l0),
        "published_16k_at_l0_25": {m: {"mcc": v[0], "f1": v[1]} for m, v in PUBLISHED_16K.items()},
    }


def code_version() -> str:
    """A digest of gba_lens's source files and SAELens's and torch's versions: what a run's figures
    depend on besides its settings."""
    digest = hashlib.sha256(f"{sae_lens.__version__} {torch.__version__}".encode())
    package = Path(__file__).resolve().parents[2]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _read_journal(path: Path, key: str) -> dict[tuple[str, float, int], dict[str, Any]]:
    """The runs of ``path`` made with ``key`` (settings and code); says how many others it leaves."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    others = sum(r.get("key") != key for r in records)
    if others:
        warnings.warn(f"{path}: {others} of its {len(records)} runs were made with other settings or another "
                      "version of gba_lens, SAELens or torch; they are not reused (the journal only resumes an "
                      "interrupted comparison)", stacklevel=3)
    return {(r["method"], r["knob_value"], r["seed"]): {k: v for k, v in r.items() if k != "key"}
            for r in records if r.get("key") == key}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of every metric, one row per (method, knob value)."""
    keys = sorted({(r["method"], r["knob_value"]) for r in runs}, key=lambda k: (M.ALL_METHODS.index(k[0]), k[1]))
    points = []
    for method, knob in keys:
        group = [r for r in runs if r["method"] == method and r["knob_value"] == knob]
        row: dict[str, Any] = {"method": method, "label": M.LABELS[method], "knob": M.KNOBS[method],
                               "knob_value": knob, "seeds": len(group)}
        for metric in METRICS + ("train_samples_per_s",):
            row[metric], row[metric + "_std"] = _mean_std([r[metric] for r in group])
        points.append(row)
    return points


def at_true_l0(points: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]], true_l0: float) -> list[dict[str, Any]]:
    """Per method: the sweep point nearest the true L0 (k = true L0 for the k-methods, GBA at its
    defaults, the paper's rule at its range) with its seed mean ± std, and MCC / F1 / EV interpolated at the true L0 along the
    mean curve (None when the sweep does not reach it)."""
    rows = []
    for method in dict.fromkeys(p["method"] for p in points):
        pts = [p for p in points if p["method"] == method]
        if method in ("gba", "gba_defaults"):  # the range's factor 1, or the one point
            chosen = min(pts, key=lambda p: abs(math.log(p["knob_value"])))
        elif method in M.L0_KNOB_METHODS:
            chosen = min(pts, key=lambda p: abs(math.log(p["knob_value"] / true_l0)))
        else:
            chosen = M.nearest_to_l0(pts, true_l0)
        row = dict(chosen)
        for metric in ("mcc", "f1", "explained_variance"):
            row[f"{metric}_interp"] = M.interpolate_at_l0(pts, metric, true_l0)
        row["l0_range"] = (min(p["l0"] for p in pts), max(p["l0"] for p in pts))
        rows.append(row)
    return rows

