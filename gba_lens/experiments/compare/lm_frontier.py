"""``gba-lens compare --preset lm``: every method's sparsity-fidelity frontier on a language model.

Per hook (a residual-stream and an MLP-out hook by default): the activations are cached once with
SAELens's ``CacheActivationsRunner`` (through :func:`gba_lens.training.lm.cache_lm_activations`),
every method trains over its sparsity sweep on the same cached tokens, and each inference SAE is
scored on held-out tokens with SAELens's ``run_evals``: CE loss recovered, KL, explained variance,
L0, dead latents and dense latents (firing on > 10% of tokens).

Inputs are normalised as SAELens's runner does with ``normalize_activations=
"expected_average_only_in"``: one factor, from the cache, scales activations to mean norm
sqrt(d_in) for every method (SAELens's L1 / JumpReLU coefficients assume it); the evaluation
passes the same factor to ``run_evals`` as its ``ActivationScaler``, so the model sees SAE outputs
in its own units. (GBA rescales its inputs itself; the common factor changes nothing for it.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gba_lens.experiments.compare import methods as M
from gba_lens.experiments.compare.config import CompareConfig
from gba_lens.data import TensorBatches, load_activations
from gba_lens.training.train import TrainConfig, resolve_device

LM_METHODS = ("gba_defaults", "gba", "topk", "batchtopk", "matryoshka", "jumprelu", "l1")
# MatchingPursuit is left out of the LM preset: its encoder runs one [batch, width] matmul per
# selected latent, so at k = 64 a step costs ~64 ordinary steps (hours on this CPU for the sweep).


@dataclasses.dataclass(frozen=True)
class LMScale:
    """Sizes of the LM preset."""

    cache_tokens: int
    train_tokens: int
    """Activation vectors per SAE (epochs over the cache when larger than it)."""
    eval_tokens: int
    batch_size: int
    width_multiple: int
    ks: tuple[float, ...]
    """k of TopK / BatchTopK / Matryoshka."""
    gba_scales: tuple[float, ...]
    """GBA's target-range factors (1 = 0.1 ... 1e-3): mean target x width ~ L0."""
    penalty_grids: tuple[tuple[str, tuple[float, ...]], ...]
    max_extensions: int
    lr: float = 3e-3
    lr_decay_fraction: float = 0.3
    eval_batch_prompts: int = 8


#: 4x-wide SAEs on 400k cached tokens per hook: a run (390 steps of 1,024) plus its evaluation
#: takes ~15-45 s on one core, the two hooks' ~70 runs about 30 minutes. The k-methods' sweep
#: steps k by about 1.5x: these frontiers are concave in log L0, and between points 2x apart the
#: chord lay up to 0.004 EV under BatchTopK's frontier (docs/experiments/prior_free.md, forty-first
#: step), which is where GBA's point is read. The evaluation's
#: 32k held-out tokens (256 rows spread over the stdlib val split) leave a standard error of
#: ~0.009 on a difference between two SAEs' CE loss recovered at mlp_out (whose ablation costs
#: only ~0.15 nats; bootstrap over rows): compare methods closer than that on more tokens.
DEFAULT_LM = LMScale(cache_tokens=400_000, train_tokens=400_000, eval_tokens=32_768, batch_size=1024,
                     width_multiple=4, ks=(8, 12, 16, 24, 32, 48, 64), gba_scales=(0.25, 0.5, 1.0, 2.0, 4.0),
                     penalty_grids=(("jumprelu", (0.1, 0.3, 1.0, 3.0)), ("l1", (0.3, 1.0, 3.0, 10.0))),
                     max_extensions=2)
#: CI: two points for GBA and BatchTopK, one for JumpReLU and L1 (TopK and Matryoshka only when
#: asked for with --methods).
QUICK_LM = LMScale(cache_tokens=16_384, train_tokens=16_384, eval_tokens=1024, batch_size=512,
                   width_multiple=2, ks=(8, 32), gba_scales=(0.5, 2.0),
                   penalty_grids=(("jumprelu", (1.0,)), ("l1", (3.0,))), max_extensions=0)
QUICK_LM_METHODS = ("gba", "batchtopk", "jumprelu", "l1")


#: The L0 range every penalty sweep is extended to span (k's range).
def l0_span(scale: LMScale) -> tuple[float, float]:
    return min(scale.ks), max(scale.ks)


def default_hooks(n_layers: int) -> list[str]:
    layer = n_layers // 2
    return [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_mlp_out"]


def _cache_key(cfg: CompareConfig, hook: str, scale: LMScale) -> str:
    key = {"model": cfg.model, "dataset": cfg.dataset, "hook": hook, "tokens": scale.cache_tokens}
    if cfg.dataset is None:  # stdlib rows spread over the train split: not a cache of its first rows
        key["rows"] = "spread"
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_activations(cfg: CompareConfig, loaded: Any, hook: str, scale: LMScale, device: str) -> tuple[Path, dict[str, Any]]:
    """The hook's activation cache (SAELens ``CacheActivationsRunner``), made on first use."""
    from gba_lens.training.lm import LMCacheConfig, cache_lm_activations

    root = Path(cfg.cache_dir or f"{cfg.out}/cache")
    directory = root / f"lm-{hook}-{_cache_key(cfg, hook, scale)}"
    if not (directory / "dataset_info.json").exists():
        if directory.exists():
            import shutil

            shutil.rmtree(directory)  # an interrupted cache
        cache_lm_activations(LMCacheConfig(model=cfg.model, dataset=cfg.dataset, hook=hook,
                                           tokens=scale.cache_tokens, out=str(directory), device=device),
                             model=loaded.model)
    info_file = directory / "gba_lens_cache.json"
    return directory, json.loads(info_file.read_text()) if info_file.exists() else {}


def lm_train_config(scale: LMScale, device: str) -> TrainConfig:
    """Every method's schedule on the preset's cached tokens (linear decay over the last fraction)."""
    steps = max(1, scale.train_tokens // scale.batch_size)
    return TrainConfig(total_samples=scale.train_tokens, batch_size=scale.batch_size, lr=scale.lr,
                       lr_decay_steps=int(scale.lr_decay_fraction * steps), device=device)


def scaling_factor_of(acts: torch.Tensor) -> float:
    """The one factor that scales the activations to mean norm sqrt(d_in), as SAELens's runner does
    with ``normalize_activations="expected_average_only_in"`` (see the module docstring)."""
    return float(math.sqrt(acts.shape[1]) / acts.norm(dim=1).mean())


def scaled_activations(cfg: CompareConfig, loaded: Any, hook: str, scale: LMScale,
                       device: str) -> tuple[torch.Tensor, float, Path, dict[str, Any]]:
    """The hook's cached training activations (cached on first use) times their scaling factor;
    also the factor, the cache directory and its info (for :func:`held_out_data`)."""
    directory, info = cached_activations(cfg, loaded, hook, scale, device)
    acts = load_activations(directory, hook).to(device)
    scaling_factor = scaling_factor_of(acts)
    return acts * scaling_factor, scaling_factor, directory, info


def held_out_data(cfg: CompareConfig, loaded: Any, info: dict[str, Any], scale: LMScale) -> tuple[Any, int]:
    """Held-out token rows never cached: the stdlib ``val`` split, else the rows after the ones
    the cache consumed."""
    import datasets

    from gba_lens.training.lm.sources import held_out_after, load_tokens

    ctx = int(info.get("context_size") or min(loaded.n_ctx, 128))
    source = load_tokens(cfg.dataset, loaded, ctx, train_tokens=scale.cache_tokens, eval_tokens=scale.eval_tokens)
    rows_used = int(info.get("dataset_rows_used", 0))
    if cfg.dataset is None:
        return source.eval, source.context_size
    if source.streaming:
        return held_out_after(source, rows_used), source.context_size
    full = datasets.concatenate_datasets([source.train, source.eval])
    n_eval = max(1, math.ceil(scale.eval_tokens / source.context_size))
    if rows_used + n_eval > len(full):
        raise ValueError(f"the activation cache used {rows_used} of {len(full)} rows: too few held-out rows remain")
    return full.select(range(rows_used, rows_used + n_eval)), source.context_size


def evaluate(sae: Any, loaded: Any, data: Any, ctx: int, hook: str, scale: LMScale, scaling_factor: float,
             device: str) -> dict[str, float]:
    """SAELens ``run_evals`` on the held-out tokens (a fresh store each time: same tokens)."""
    from sae_lens import run_evals

    from gba_lens.compat import EvalConfig
    from sae_lens.training.activation_scaler import ActivationScaler

    from gba_lens.training.lm.evaluate import make_eval_store

    store = make_eval_store(loaded.model, data, hook, sae.cfg.d_in, ctx, scale.eval_batch_prompts, device)
    n_batches = max(1, scale.eval_tokens // (scale.eval_batch_prompts * ctx))
    eval_cfg = EvalConfig(batch_size_prompts=scale.eval_batch_prompts, n_eval_reconstruction_batches=n_batches,
                          compute_kl=True, compute_ce_loss=True, n_eval_sparsity_variance_batches=n_batches,
                          compute_l2_norms=True, compute_sparsity_metrics=True, compute_variance_metrics=True,
                          compute_featurewise_density_statistics=True)
    grouped, per_feature = run_evals(sae=sae, activation_store=store, model=loaded.model,
                                     activation_scaler=ActivationScaler(scaling_factor), eval_config=eval_cfg,
                                     exclude_special_tokens=False, verbose=False)
    flat = {k: float(v) for group in grouped.values() for k, v in group.items()}
    density = torch.tensor(per_feature["feature_density"], dtype=torch.float32)
    return {
        "ce_loss_score": flat["ce_loss_score"], "ce_loss_with_sae": flat["ce_loss_with_sae"],
        "ce_loss_without_sae": flat["ce_loss_without_sae"], "kl_div_with_sae": flat["kl_div_with_sae"],
        "explained_variance": flat["explained_variance"], "l0": flat["l0"],
        "dead_fraction": float((density == 0).float().mean()), "dense_fraction": float((density > 0.1).float().mean()),
    }


def initial_sweep(method: str, scale: LMScale) -> list[M.Variant]:
    if method == "gba_defaults":
        return M.defaults_point()
    if method == "gba":
        return M.gba_sweep(scale.gba_scales)
    if method in M.PENALTY_METHODS:
        return M.penalty_sweep(method, dict(scale.penalty_grids)[method])
    return M.l0_knob_sweep(method, scale.ks)


def run_lm_frontier(cfg: CompareConfig, progress: bool = True, scale: LMScale | None = None) -> dict[str, Any]:
    """Train and evaluate every method's sweep at each hook; returns the JSON-ready results.
    ``scale`` replaces the preset's sizes (tests, custom studies)."""
    from gba_lens.training.lm.sources import load_model, validate_hooks

    device = resolve_device(cfg.device)
    scale = scale or (QUICK_LM if cfg.quick else DEFAULT_LM)
    if cfg.samples is not None:
        scale = dataclasses.replace(scale, train_tokens=cfg.samples)
    if cfg.lr is not None:
        scale = dataclasses.replace(scale, lr=cfg.lr)
    methods = list(cfg.methods or (QUICK_LM_METHODS if cfg.quick else LM_METHODS))
    for m in methods:
        if m not in M.ALL_METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {M.ALL_METHODS}")
    seed = cfg.resolved_seeds()[0]
    loaded = load_model(cfg.model, "auto", device)
    hooks = list(cfg.hooks or default_hooks(loaded.n_layers))
    d_ins = validate_hooks(loaded.model, hooks)
    train = lm_train_config(scale, device)
    low, high = l0_span(scale)
    runs: list[dict[str, Any]] = []
    hook_info: dict[str, Any] = {}
    for hook in hooks:
        t0 = time.perf_counter()
        acts, scaling_factor, directory, info = scaled_activations(cfg, loaded, hook, scale, device)
        cache_seconds = time.perf_counter() - t0
        data, ctx = held_out_data(cfg, loaded, info, scale)
        width = cfg.width or scale.width_multiple * d_ins[hook]
        hook_info[hook] = {"cache": str(directory), "cached_tokens": acts.shape[0], "d_in": d_ins[hook], "width": width,
                           "scaling_factor": scaling_factor, "cache_seconds": cache_seconds}
        sweeps = {m: initial_sweep(m, scale) for m in methods}
        bar = tqdm(total=sum(len(v) for v in sweeps.values()), desc=f"lm runs {hook}", disable=not progress)

        def run(variant: M.Variant) -> dict[str, Any]:
            bar.set_postfix_str(variant.key)
            sae, seconds, l0_note = M.train_variant(variant, TensorBatches(acts, scale.batch_size, seed=seed),
                                                    acts.shape[1], width, train, seed, hook)
            t1 = time.perf_counter()
            metrics = evaluate(M.to_inference(sae, hook), loaded, data, ctx, hook, scale, scaling_factor, device)
            rec = {"hook": hook, "method": variant.method, "label": variant.label, "knob": M.KNOBS[variant.method],
                   "knob_value": variant.knob, "seed": seed, "width": width, "train_seconds": seconds,
                   "eval_seconds": time.perf_counter() - t1,
                   "train_samples_per_s": scale.train_tokens / max(seconds, 1e-9), "l0_note": l0_note, **metrics}
            runs.append(rec)
            bar.update()
            return rec

        for m in methods:
            recs = [run(v) for v in sweeps[m]]
            for _ in range(scale.max_extensions if m in M.PENALTY_METHODS else 0):
                nxt = M.extend_grid([r["knob_value"] for r in recs], [r["l0"] for r in recs], 1.25 * low, 0.8 * high)
                if nxt is None:
                    break
                bar.total += 1
                recs.append(run(M.Variant(m, nxt)))
        bar.close()
    return {
        "preset": "lm",
        "model": loaded.model_name,
        "dataset": cfg.dataset or "stdlib corpus",
        "hooks": hook_info,
        "scale": dataclasses.asdict(scale),
        "train": dataclasses.asdict(train),
        "seed": seed,
        "runs": runs,
        "frontier_at": frontier_comparison(runs),
        "defaults_against_frontiers": defaults_against_frontiers(runs),
    }


def frontier_comparison(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per hook and swept method: CE loss recovered and EV interpolated at L0 16 and 32 (None outside
    the method's measured L0 range), the frontier read at common L0s (GBA's defaults, one point:
    :func:`defaults_against_frontiers`)."""
    rows = []
    for hook in dict.fromkeys(r["hook"] for r in runs):
        for method, pts in _sweeps(runs, hook):
            row: dict[str, Any] = {"hook": hook, "method": method, "label": M.LABELS[method],
                                   "l0_range": (min(p["l0"] for p in pts), max(p["l0"] for p in pts))}
            for l0 in (16, 32):
                for metric in ("ce_loss_score", "explained_variance", "kl_div_with_sae"):
                    row[f"{metric}@{l0}"] = M.interpolate_at_l0(pts, metric, l0)
            rows.append(row)
    return rows


def defaults_against_frontiers(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per hook and method: GBA at its defaults minus the method's frontier at GBA's own L0 (CE
    loss recovered and EV interpolated in log L0; None outside the method's measured L0 range)."""
    rows = []
    for own in (r for r in runs if r["method"] == "gba_defaults"):
        for method, pts in _sweeps(runs, own["hook"]):
            row: dict[str, Any] = {"hook": own["hook"], "method": method, "label": M.LABELS[method], "l0": own["l0"]}
            for metric in ("ce_loss_score", "explained_variance"):
                at = M.interpolate_at_l0(pts, metric, own["l0"])
                row[f"{metric}_gap"] = None if at is None else own[metric] - at
            rows.append(row)
    return rows


def _sweeps(runs: list[dict[str, Any]], hook: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(method, its runs)`` at ``hook`` for every swept method (GBA's defaults are one point)."""
    methods = dict.fromkeys(r["method"] for r in runs if r["hook"] == hook and r["method"] != "gba_defaults")
    return [(m, [r for r in runs if r["hook"] == hook and r["method"] == m]) for m in methods]
