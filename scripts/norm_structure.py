"""How an input's norm relates to its direction, on every model of docs/experiments/prior_free.md
(forty-first step): whether the data could tell GBA to divide each input by its norm
(``input_norm="per_token"``). No SAE is trained; each statistic reads a sample of inputs.

    python scripts/norm_structure.py --seeds 0 1 2

* ``r2``: the share of the variance of log |x| that a linear function of the direction x / |x|
  predicts on held-out rows (ridge least squares on one half, read on the other). In a scale mixture
  (x = g u, the gain g drawn apart from u) the direction says nothing of the norm: 0.
* ``rho``: the rank correlation between |x| and the largest cosine of x / |x| with any other row of
  the sample. In sparse data whose features' magnitudes are drawn on their own, a larger norm means
  more features, so a direction further from any other input's: negative. In a scale mixture: 0.

One JSON line per model and seed.
"""

from __future__ import annotations

import argparse
import json

import torch
from jaxtyping import Float

ROWS_PER_BLOCK = 1024
"""``rho`` reads the cosines of this many rows with every other at a time."""
RIDGE = 1e-3
"""Ridge of the least squares of ``r2`` (the directions' Gram matrix is near singular in low-rank data)."""


def ranks(values: Float[torch.Tensor, " n"]) -> Float[torch.Tensor, " n"]:
    """0 … n-1 by increasing value, tied values sharing their mean rank (inputs that hold one feature
    alone have a nearest cosine of exactly 1)."""
    ordered, order = values.sort(stable=True)
    _, position, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(values.dtype)
    out = torch.empty_like(values)
    out[order] = (ends - (counts.to(values.dtype) + 1) / 2)[position]
    return out


def rank_correlation(a: Float[torch.Tensor, " n"], b: Float[torch.Tensor, " n"]) -> float:
    """Spearman's rank correlation."""
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp(min=1e-12))


def directions(x: Float[torch.Tensor, "n d"]) -> tuple[Float[torch.Tensor, " n"], Float[torch.Tensor, "n d"]]:
    x = x.double()
    norm = x.norm(dim=-1)
    keep = norm > 0
    if not keep.any():
        raise ValueError("every input is zero: no direction to read")
    return norm[keep], x[keep] / norm[keep, None]


def norm_from_direction(x: Float[torch.Tensor, "n d"]) -> float:
    """``r2`` (see the module): the held-out R^2 of log |x| from a linear function of x / |x|."""
    norm, u = directions(x)
    half = norm.numel() // 2
    if half < u.shape[1] + 2:
        raise ValueError(f"{norm.numel()} non-zero inputs cannot fit {u.shape[1]} directions: give at least {2 * (u.shape[1] + 2)}")
    target = norm.log()
    design = torch.cat([u, torch.ones_like(norm)[:, None]], 1)
    fit, held = slice(0, half), slice(half, None)
    gram = design[fit].T @ design[fit] + RIDGE * torch.eye(design.shape[1], dtype=design.dtype)
    weights = torch.linalg.solve(gram, design[fit].T @ target[fit])
    residual = target[held] - design[held] @ weights
    return float(1 - residual.var() / target[held].var().clamp(min=1e-24))


def norm_and_nearest_cosine(x: Float[torch.Tensor, "n d"]) -> float:
    """``rho`` (see the module): the rank correlation of |x| with its direction's largest cosine to another row."""
    norm, u = directions(x)
    nearest = torch.empty_like(norm)
    for start in range(0, u.shape[0], ROWS_PER_BLOCK):  # a block of rows' cosines at a time, not n x n at once
        cosines = u[start:start + ROWS_PER_BLOCK] @ u.T
        cosines[:, start:start + ROWS_PER_BLOCK].fill_diagonal_(-2.0)  # not its own
        nearest[start:start + ROWS_PER_BLOCK] = cosines.max(1).values
    return rank_correlation(norm, nearest)


def models(seeds: list[int], samples: int, lm_cache: str | None, synthbench_cache: str | None):
    """(name, seed, inputs) for every model of the page."""
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    from gba_lens.experiments.zipf import ZIPF_CONFIGS, zipf_model
    from gba_lens.synthetic.paper_model import SparseMixtureModel, paper_toy, small_model_config

    for seed in seeds:
        torch.manual_seed(seed)
        yield "paper toy", seed, paper_toy(seed).sample(samples)
        for cfg in ZIPF_CONFIGS:
            yield f"Zipf {cfg.name[0]}", seed, zipf_model(cfg, seed).sample(samples)
        small = SparseMixtureModel(small_model_config(seed)).sample(samples)
        yield "small", seed, small
        gains = 0.3 + 3.0 * torch.rand(samples, 1, generator=torch.Generator().manual_seed(seed))
        yield "small, each input scaled by a gain in [0.3, 3.3]", seed, small * gains
        counterexample = SyntheticModel(SyntheticModelConfig(
            num_features=128, hidden_dim=64,
            firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.15, min_prob=0.05), seed=seed))
        yield "counter-example", seed, counterexample.sample(samples)
    if synthbench_cache is not None:
        from gba_lens.experiments.compare.pool import DEFAULT_SCALE, load_or_build_pool

        pool = load_or_build_pool(DEFAULT_SCALE, synthbench_cache)
        for seed in seeds:
            if pool.train is None:  # a streamed pool: fresh samples of its model
                torch.manual_seed(seed)
                yield "synthbench", seed, pool.model.sample(samples).float()
                continue
            rows = torch.randperm(pool.train.shape[0], generator=torch.Generator().manual_seed(seed))[:samples]
            yield "synthbench", seed, pool.train[rows].float()
    if lm_cache is not None:
        from pathlib import Path

        from gba_lens.data.activations import load_activations

        for directory in sorted(Path(lm_cache).glob("lm-*")):
            hook = json.loads((directory / "gba_lens_cache.json").read_text())["hook_name"]
            acts = load_activations(directory, hook)
            for seed in seeds:
                rows = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(seed))[:samples]
                yield f"stdlib LM {hook}", seed, acts[rows].float()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=8192, help="inputs read per model and seed")
    p.add_argument("--lm-cache", default="runs/compare_lm/cache",
                   help="the lm preset's activation caches (gba-lens compare --preset lm); 'none' to skip")
    p.add_argument("--synthbench-cache", default="runs/compare_synthbench/cache",
                   help="the synthbench preset's pool (built there if missing); 'none' to skip")
    args = p.parse_args(argv)
    lm = None if args.lm_cache == "none" else args.lm_cache
    synthbench = None if args.synthbench_cache == "none" else args.synthbench_cache
    for name, seed, x in models(args.seeds, args.samples, lm, synthbench):
        norm = x.norm(dim=-1)
        print(json.dumps({"model": name, "seed": seed, "samples": x.shape[0],
                          "norm_cv": round(float(norm.std() / norm.mean()), 4),
                          "r2": round(norm_from_direction(x), 4), "rho": round(norm_and_nearest_cosine(x), 4)}),
              flush=True)


if __name__ == "__main__":
    main()
