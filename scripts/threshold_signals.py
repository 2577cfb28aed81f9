"""Unsupervised signals for the level a GBA neuron should fire at, measured against the truth
(docs/experiments/prior_free.md, fourteenth and sixteenth steps). One JSON line per model.

``oracle``: trains the geometric default, then for every neuron whose decoder row matches a true
feature finds the threshold that maximises its F1 against that feature's occurrences (theta*) and
reports what a rule without the truth could see there: theta* in units of the robust spread of
u (median, MAD) and of its maximum, the elasticity of the firing frequency to the threshold at
theta* and at the trained threshold, and the anisotropy of the residual on the neuron's firings
(a mixture's firings leave the difference of its features). It also scores three rules, each
setting every threshold from u alone: where the excess of u over a null (the pre-activation the
other latents' reconstruction gives) maximises the F1 that excess implies; the description-length
(universal) threshold; the posterior 1/2 of a two-Gaussian mixture. And it counts the true
features more frequent than the highest target (``--highest-target``), which no neuron may fire
as often as, with the best decoder cosine each has.

``parallel``: parallel analysis for the L0, as for the number of principal components: GBA asked
for a range of L0s (``target_l0``) on the data and on a Gaussian with the data's mean and
covariance; the L0 where the data's explained variance leads the null's the most.

``coactivation``: ``find_l0``'s ratio (the mean |cos| between the decoder rows of latents active on
the same input over that of two live latents) for the data's own features and for the geometric
default at each top target, beside the figures against the truth.

``agreement``: stability selection for the top target: the geometric default trained on several
seeds at each top target, and how far the seeds' dictionaries agree (the paper's cross-seed
consistency, the share of one seed's decoder rows with a row of another at cosine > 0.9, and the
mean of those best cosines), beside the figures against the truth.

    python scripts/threshold_signals.py oracle --models toy A sb
    python scripts/threshold_signals.py oracle --models sb --highest-target 0.2
    python scripts/threshold_signals.py parallel --models A B C --l0 0.5 1 1.5 2 3 4 6 8 12 16 --samples 500000
    python scripts/threshold_signals.py parallel --models sb --l0 1 2 3 4 6 8 12 16 --samples 250000
    python scripts/threshold_signals.py parallel --models toy --l0 2 4 6 8 12 16 24 32 --samples 300000
    python scripts/threshold_signals.py agreement --models A B C sb toy --seeds 0 1 2
    python scripts/threshold_signals.py coactivation --models A B C sb toy
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float

from gba_lens.experiments.gba_modes import GBA_MODES

MODELS = ("toy", "A", "B", "C", "sb")
MATCH_COSINE = {"sb": 0.6}
"""Decoder cosine with a true feature for a neuron to count as matched (0.8 elsewhere): the
synthbench SAE's best cosines are lower (MCC 0.68), 0.8 would leave a quarter of its matches."""


def f1_best_threshold(u: Float[torch.Tensor, " n"], present: Bool[torch.Tensor, " n"],
                      n_candidates: int = 400) -> tuple[float, float]:
    """The threshold on ``u`` (among its quantiles 0.5 ... 0.9999) whose firing 1[u > t] has the best
    F1 against ``present``; returns (threshold, F1)."""
    candidates = torch.quantile(u, torch.linspace(0.5, 0.9999, n_candidates))
    fires = (u[:, None] > candidates[None]).float()
    tp = (fires * present[:, None]).sum(0)
    f1 = 2 * tp / (fires.sum(0) + present.sum()).clamp(min=1)
    best = int(f1.argmax())
    return float(candidates[best]), float(f1[best])


def elasticity(u: Float[torch.Tensor, " n"], threshold: float, step: float = 0.1) -> float:
    """-d log P(u > t) / d log t at ``threshold`` (central difference over +-``step``)."""
    low = float((u > threshold * (1 - step)).float().mean())
    high = float((u > threshold * (1 + step)).float().mean())
    return (math.log(max(low, 1e-9)) - math.log(max(high, 1e-9))) / (2 * step)


def residual_anisotropy(residual: Float[torch.Tensor, "n d_in"], direction: Float[torch.Tensor, " d_in"]) -> float:
    """Top eigenvalue of the residual's second moment, ``direction`` projected out, over the mean
    eigenvalue: 1 for an isotropic residual, up to d_in for one along a single direction."""
    unit = direction / direction.norm()
    r = residual - (residual @ unit)[:, None] * unit[None]
    eigenvalues = torch.linalg.eigvalsh(r.T @ r / r.shape[0])
    return float(eigenvalues[-1] / eigenvalues.mean().clamp(min=1e-12))


def null_excess_thresholds(u: Float[torch.Tensor, "n d_sae"], null: Float[torch.Tensor, "n d_sae"],
                           n_bins: int = 64) -> Float[torch.Tensor, " d_sae"]:
    """Per neuron, the threshold t maximising 2 TP / (2 TP + FP + FN) with TP(t) the excess of
    #(u > t) over #(null > t), FP(t) = #(null > t) and FN(t) = max excess - TP(t)."""
    top = torch.maximum(u.max(0).values, null.max(0).values).clamp(min=1e-6)
    edges = torch.linspace(0, 1, n_bins + 1)[None] * top[:, None]            # [d_sae, bins + 1]

    def above(values: torch.Tensor) -> torch.Tensor:  # [d_sae, bins + 1]: inputs over each of a neuron's edges
        return torch.stack([(values[:, m, None] > edges[m]).sum(0) for m in range(values.shape[1])]).float()

    above_u, above_null = above(u), above(null)
    excess = (above_u - above_null).clamp(min=0)
    missed = excess.max(1, keepdim=True).values - excess
    f1 = 2 * excess / (2 * excess + above_null + missed).clamp(min=1e-9)
    return edges.gather(1, f1.argmax(1, keepdim=True))[:, 0]


def robust_noise(u: Float[torch.Tensor, "n d_sae"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per neuron the median of u and its spread as a Gaussian's sigma (1.4826 MAD): the noise mode
    when most inputs lack the neuron's feature."""
    median = u.median(0).values
    return median, (1.4826 * (u - median).abs().median(0).values).clamp(min=1e-9)


def universal_thresholds(u: Float[torch.Tensor, "n d_sae"], c: float = 1.0,
                         grid: Float[torch.Tensor, " g"] | None = None) -> Float[torch.Tensor, " d_sae"]:
    """Per neuron the lowest threshold t = median + z sigma (z on ``grid``) with
    z >= c sqrt(2 ln(1 / P(u > t))): a firing pays for itself in description length when the
    squared coefficient in noise units exceeds twice the nats of the firing (sigma sqrt(2 ln n),
    Donoho and Johnstone's universal threshold, with n the neuron's own odds)."""
    grid = torch.linspace(0.5, 12, 231) if grid is None else grid
    median, sigma = robust_noise(u)
    t = median[:, None] + grid[None] * sigma[:, None]                                   # [d_sae, g]
    ordered = u.T.contiguous().sort(1).values                                          # [d_sae, n]
    firing = 1 - torch.searchsorted(ordered, t.contiguous(), right=True).float() / u.shape[0]
    pays = grid[None] >= c * torch.sqrt(2 * torch.log(1 / firing.clamp(min=1 / u.shape[0])))
    pays[:, -1] = True  # none pays on the grid: its end
    return t.gather(1, pays.float().argmax(1, keepdim=True))[:, 0]


def mixture_thresholds(u: Float[torch.Tensor, "n d_sae"], tail_sigmas: float = 3.0,
                       iterations: int = 40) -> Float[torch.Tensor, " d_sae"]:
    """Per neuron a two-Gaussian mixture of u fitted by EM (noise started at the median and robust
    sigma, the feature at the inputs over ``tail_sigmas`` of it) and the lowest u above the noise's
    mean where the feature's posterior reaches 1/2; NaN where the fit has no component above the
    noise."""
    median, sigma = robust_noise(u)
    tail = u > median + tail_sigmas * sigma
    n_tail = tail.sum(0).clamp(min=1)
    weight = tail.float().mean(0).clamp(1e-4, 0.5)
    mean1 = torch.where(tail, u, 0).sum(0) / n_tail
    var1 = torch.where(tail, (u - mean1) ** 2, 0).sum(0) / n_tail + sigma ** 2
    mean0, var0 = median.clone(), sigma ** 2

    def log_densities(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.log(1 - weight) - 0.5 * torch.log(var0) - (x - mean0) ** 2 / (2 * var0)
        return noise, torch.log(weight) - 0.5 * torch.log(var1) - (x - mean1) ** 2 / (2 * var1)

    for _ in range(iterations):
        noise, feature = log_densities(u)
        r1 = torch.sigmoid(feature - noise)
        n1, n0 = r1.sum(0).clamp(min=1e-3), (1 - r1).sum(0).clamp(min=1e-3)
        weight = (n1 / u.shape[0]).clamp(1e-5, 0.5)
        mean1, mean0 = (r1 * u).sum(0) / n1, ((1 - r1) * u).sum(0) / n0
        var1 = ((r1 * (u - mean1) ** 2).sum(0) / n1).clamp(min=1e-9)
        var0 = (((1 - r1) * (u - mean0) ** 2).sum(0) / n0).clamp(min=1e-9)
    t = mean0[None] + torch.linspace(0, 15, 301)[:, None] * var0.sqrt()[None]         # [g, d_sae]
    noise, feature = log_densities(t)
    crosses = (feature >= noise) & (t <= mean1[None])
    found = crosses.any(0) & (mean1 > mean0)
    return torch.where(found, t.gather(0, crosses.float().argmax(0)[None])[0], torch.full_like(mean0, math.nan))


def largest_lead(l0s: list[float], data_ev: list[float], null_ev: list[float]) -> float:
    """The L0 at which the data's explained variance leads the null's the most."""
    leads = [d - n for d, n in zip(data_ev, null_ev)]
    return l0s[max(range(len(leads)), key=leads.__getitem__)]


class Setting(NamedTuple):
    """A synthetic model as the prior_free.py figures train on it."""

    name: str
    model: Any                                      # feature_dict, activation_generator
    sample: Callable[[int], torch.Tensor]           # training inputs
    width: int
    batch_size: int
    lr: float
    decay_fraction: float
    samples: int                                    # prior_free.py's budget
    sae_params: dict[str, Any]
    top_w_l0: float
    evaluate: Callable[[Any], dict[str, float]]
    stream: Callable[[int], Iterator[torch.Tensor]] | None = None
    """Training batches for a seed when not drawn from ``sample`` (synthbench: epochs over its pool)."""


def setting(name: str, cache: str) -> Setting:
    from gba_lens.synthetic.metrics import evaluate_on_synthetic

    def scores(model):
        def run(sae):
            r = evaluate_on_synthetic(sae, model)
            return {"mcc": r.mcc, "f1": r.f1, "l0": r.l0, "explained_variance": r.explained_variance}
        return run

    if name == "toy":
        from gba_lens.experiments.paper_toy import PAPER_TOY_SAE, PaperToySetup
        from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel

        toy = PaperToySetup()
        model = SparseMixtureModel(SparseMixtureConfig(seed=toy.data_seed), "cpu")
        return Setting(name, model, model.sample, toy.width, toy.batch_size, toy.lr, 0.0, toy.samples,
                       dict(PAPER_TOY_SAE), model.cfg.mean_sparsity, scores(model))
    if name == "sb":
        from gba_lens.experiments.compare.pool import DEFAULT_SCALE, load_or_build_pool, top_width_l0
        from gba_lens.experiments.compare.synthbench import _data, evaluate

        scale = dataclasses.replace(DEFAULT_SCALE, samples=750_000)
        pool = load_or_build_pool(scale, cache)
        rows = pool.train
        assert rows is not None, "the synthbench preset's pool stores its training rows"
        return Setting(name, pool.model, lambda n: rows[torch.randint(0, rows.shape[0], (n,))], scale.width,
                       scale.batch_size, scale.lr, scale.lr_decay_fraction, scale.samples, {},
                       top_width_l0(pool.eval_features, scale.width),
                       lambda sae: {k: v for k, v in evaluate(sae, pool, scale.eval_samples).items()
                                    if k in ("mcc", "f1", "l0", "explained_variance")},
                       lambda seed: _data(pool, scale, seed))
    from gba_lens.experiments.zipf import ZIPF_CONFIGS, zipf_model, zipf_top_width_l0, zipf_train_config

    zcfg = ZIPF_CONFIGS["ABC".index(name)]
    model = zipf_model(zcfg, 0)
    train = zipf_train_config(1_000_000)
    return Setting(name, model, model.sample, zcfg.width, train.batch_size, train.lr, 0.3, train.total_samples,
                   {}, zipf_top_width_l0(model, zcfg.width), scores(model))


def train_gba(s: Setting, samples: int, seed: int, setup: Callable[[Any], None] | None = None, **options: Any) -> Any:
    """A GBA SAE trained on ``s`` with ``options``; ``setup`` sees it before training."""
    from gba_lens.data.batches import SeededBatches
    from gba_lens.training.methods import build_sae
    from gba_lens.training.train import TrainConfig, train_sae

    if "target_l0" in options:  # asked for an L0 as these figures were measured (the paper's options)
        options = {**GBA_MODES["told-l0"], **options}
    torch.manual_seed(seed)
    sae = build_sae("gba", s.model.feature_dict.hidden_dim, s.width, **s.sae_params, **options)
    if setup is not None:
        setup(sae)
    steps = samples // s.batch_size
    batches = s.stream(seed) if s.stream is not None else SeededBatches(s.sample, s.batch_size, seed=seed)
    train_sae(sae, batches,
              TrainConfig(total_samples=samples, batch_size=s.batch_size, lr=s.lr,
                          lr_decay_steps=int(s.decay_fraction * steps), device="cpu"))
    return sae.eval()


def quantiles(values: torch.Tensor) -> list[float]:
    """10th, 25th, 50th, 75th and 90th percentiles, rounded."""
    values = values[~torch.isnan(values)]
    return [round(v, 3) for v in torch.quantile(values, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])).tolist()]


def oracle(s: Setting, seed: int, n_samples: int, **options: Any) -> dict[str, Any]:
    sae = train_gba(s, s.samples, seed, **options)
    with torch.no_grad():
        return _oracle_measures(s, sae, seed, n_samples)


def _oracle_measures(s: Setting, sae: Any, seed: int, n_samples: int) -> dict[str, Any]:
    from gba_lens.synthetic.metrics import max_cosines

    trained = s.evaluate(sae)
    torch.manual_seed(1000 + seed)
    features = s.model.activation_generator.sample(n_samples).float()
    features = features.to_dense() if features.is_sparse else features
    x = s.model.feature_dict(features)
    u = sae.pre_activations(x)
    z, _ = sae.encode_with_hidden_pre(x)
    reconstruction = sae.decode(z)
    residual = sae.process_sae_in(x) - sae.process_sae_in(reconstruction)
    decoder = torch.nn.functional.normalize(sae.W_dec.float(), dim=1)
    truth = torch.nn.functional.normalize(s.model.feature_dict.feature_vectors.float(), dim=1)
    best_cosine, best_feature = (decoder @ truth.T).max(1)
    matched = best_cosine >= MATCH_COSINE.get(s.name, 0.8)
    threshold = -sae.b_enc.float()
    per_neuron: dict[str, list[float]] = {k: [] for k in ("theta_over_mad", "theta_over_max", "trained_over_theta",
                                                          "firing_over_feature", "f1", "elasticity_theta",
                                                          "elasticity_trained")}
    firing_at_theta = 0.0
    medians, sigmas = robust_noise(u)
    for m in matched.nonzero()[:, 0].tolist():
        um, present = u[:, m], features[:, best_feature[m]] > 0
        theta, f1 = f1_best_threshold(um, present)
        median, mad = float(medians[m]), float(sigmas[m]) / 1.4826
        firing = float((um > theta).float().mean())
        firing_at_theta += firing
        per_neuron["theta_over_mad"].append((theta - median) / max(mad, 1e-9))
        per_neuron["theta_over_max"].append(theta / max(float(um.max()), 1e-9))
        per_neuron["trained_over_theta"].append(float(threshold[m]) / theta if theta > 0 else math.nan)
        per_neuron["firing_over_feature"].append(firing / max(float(present.float().mean()), 1e-9))
        per_neuron["f1"].append(f1)
        per_neuron["elasticity_theta"].append(elasticity(um, theta))
        per_neuron["elasticity_trained"].append(elasticity(um, float(threshold[m])) if threshold[m] > 0 else math.nan)
    fired = z != 0
    anisotropy = torch.tensor([residual_anisotropy(residual[fired[:, m]], decoder[m]) if fired[:, m].sum() >= 20
                               else math.nan for m in range(s.width)])
    # The null rule: the other latents' reconstruction seen by neuron m, w_m . (x_hat - z_m d_m - b_pre).
    null = sae.pre_activations(reconstruction) - z * (sae.W_dec * sae.W_enc.T).sum(1)[None]
    trained_bias = sae.b_enc.detach().clone()
    sae.b_enc.data.copy_(-null_excess_thresholds(u, null))
    null_rule = s.evaluate(sae)
    rules = {}
    for name, thresholds in (("universal_rule", universal_thresholds(u)), ("mixture_rule", mixture_thresholds(u))):
        sae.b_enc.data.copy_(torch.where(thresholds.isnan(), trained_bias, -thresholds.clamp(min=0)))
        rules[name] = s.evaluate(sae)
    sae.b_enc.data.copy_(trained_bias)
    # The true features more frequent than the highest target, which no neuron can fire as often as.
    frequency = (features > 0).float().mean(0)
    frequent = frequency > sae.cfg.highest_target
    return {"model": s.name, "seed": seed, "top_w_l0": s.top_w_l0, "trained": trained, "matched": int(matched.sum()),
            **{k: quantiles(torch.tensor(v)) for k, v in per_neuron.items()},
            "firing_at_theta_summed": firing_at_theta,
            "anisotropy_matched": quantiles(anisotropy[matched]), "anisotropy_unmatched": quantiles(anisotropy[~matched]),
            "null_rule": null_rule, **rules,
            "above_highest_target": {"features": int(frequent.sum()), "summed_frequency": float(frequency[frequent].sum()),
                                     "best_cosine": quantiles(max_cosines(sae.W_dec, truth[frequent])) if frequent.any() else []}}


def parallel(s: Setting, l0s: list[float], samples: int, seed: int) -> dict[str, Any]:
    torch.manual_seed(123)
    x = torch.cat([s.sample(10_000) for _ in range(20)]).float()
    mean, covariance = x.mean(0), torch.cov(x.T)
    factor = torch.linalg.cholesky(covariance + 1e-6 * torch.eye(covariance.shape[0]))

    def gaussian(n: int) -> torch.Tensor:
        return mean + torch.randn(n, mean.shape[0]) @ factor.T

    torch.manual_seed(999)
    held_out = {"data": torch.cat([s.sample(10_000) for _ in range(2)]).float(), "null": gaussian(20_000)}
    curves: dict[str, dict[str, list[float]]] = {k: {"l0": [], "ev": []} for k in held_out}
    for l0 in l0s:
        for name, sample in (("data", s.sample), ("null", gaussian)):
            on = s if name == "data" else s._replace(sample=sample, stream=None)
            sae = train_gba(on, samples, seed, target_l0=l0)
            h = held_out[name]
            with torch.no_grad():
                z = sae.encode(h)
                ev = 1 - ((h - sae.decode(z)) ** 2).sum() / ((h - h.mean(0)) ** 2).sum()
            curves[name]["l0"].append(round(float((z != 0).float().sum(1).mean()), 3))
            curves[name]["ev"].append(round(float(ev), 4))
    lead_at = largest_lead(curves["data"]["l0"], curves["data"]["ev"], curves["null"]["ev"])
    return {"model": s.name, "seed": seed, "top_w_l0": s.top_w_l0, "asked": l0s, "curves": curves,
            "largest_lead_at_l0": lead_at, "off_top_w": lead_at / s.top_w_l0 - 1}


def seed_agreement(decoders: list[Float[torch.Tensor, "d_sae d_in"]]) -> tuple[float, float]:
    """Over every ordered pair of dictionaries (decoder rows), the paper's cross-seed consistency
    (share of the first's rows with a row of the second at cosine > 0.9) and the mean best cosine."""
    from gba_lens.synthetic.metrics import cross_seed_consistency, max_cosines

    pairs = list(itertools.permutations(decoders, 2))
    consistency = sum(cross_seed_consistency(a, b) for a, b in pairs) / len(pairs)
    best_cosine = sum(float(max_cosines(b, a).mean()) for a, b in pairs) / len(pairs)
    return consistency, best_cosine


def agreement(s: Setting, highest_targets: list[float], seeds: list[int]) -> dict[str, Any]:
    rows = []
    for highest in highest_targets:
        saes = [train_gba(s, s.samples, seed, highest_target=highest) for seed in seeds]
        scores = [s.evaluate(sae) for sae in saes]
        consistency, best_cosine = seed_agreement([sae.W_dec.detach() for sae in saes])
        rows.append({"highest_target": highest, **{k: round(sum(sc[k] for sc in scores) / len(scores), 4) for k in scores[0]},
                     "consistency": round(consistency, 4), "mean_best_cosine": round(best_cosine, 4)})
    return {"model": s.name, "seeds": seeds, "top_w_l0": s.top_w_l0, "rows": rows,
            "most_consistent_at": max(rows, key=lambda r: r["consistency"])["highest_target"]}


def coactivation_ratio(acts: Float[torch.Tensor, "n width"], directions: Float[torch.Tensor, "width d"]) -> float:
    """``find_l0``'s ratio on whole activations: the mean |cos| of the directions of every pair of
    distinct units active on the same input over the mean of every pair of live units."""
    from gba_lens.saes.coactivation import active_entries, coactive_alignment, random_pair_alignment

    directions = directions / directions.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    live = (acts != 0).any(0)
    total, pairs = coactive_alignment(*active_entries(acts, acts.shape[0], 64), directions, max_active=64)
    baseline = random_pair_alignment(directions[live], torch.Generator().manual_seed(0), n_latents=int(live.sum()))
    return float(total / pairs / baseline)


def coactivation(s: Setting, highest_targets: list[float], seed: int, n_samples: int) -> dict[str, Any]:
    """The ratio of the data's own features, and of the geometric default at each top target."""
    torch.manual_seed(1000 + seed)
    features = s.model.activation_generator.sample(n_samples).float()
    features = features.to_dense() if features.is_sparse else features
    rows = [{"highest_target": "truth", "l0": round(float((features > 0).sum(1).float().mean()), 3),
             "ratio": round(coactivation_ratio(features, s.model.feature_dict.feature_vectors), 3)}]
    for highest in highest_targets:
        sae = train_gba(s, s.samples, seed, highest_target=highest)
        torch.manual_seed(2000 + seed)
        with torch.no_grad():
            inference = sae.to_inference_sae()
            acts = inference.encode(s.sample(n_samples))
        rows.append({"highest_target": highest, **{k: round(v, 4) for k, v in s.evaluate(sae).items()},
                     "ratio": round(coactivation_ratio(acts, inference.W_dec.detach()), 3)})
    return {"model": s.name, "seed": seed, "top_w_l0": s.top_w_l0, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=("oracle", "parallel", "agreement", "coactivation"))
    p.add_argument("--models", nargs="+", choices=MODELS, default=["toy", "A", "sb"],
                   help="the paper toy, Zipf A / B / C, the synthbench preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=None, help="training samples (default: prior_free.py's budget)")
    p.add_argument("--eval-samples", type=int, default=100_000, help="oracle: held-out samples (coactivation: a fifth)")
    p.add_argument("--highest-target", type=float, default=None,
                   help="oracle: the geometric range's top target (HTF; default: GBA's)")
    p.add_argument("--l0", type=float, nargs="+", default=[1, 2, 4, 8, 16], help="parallel: the L0s asked for")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="agreement: the seeds compared")
    p.add_argument("--highest-targets", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.4],
                   help="agreement, coactivation: the top targets tried")
    p.add_argument("--cache", default="runs/compare_synthbench/cache")
    args = p.parse_args(argv)
    if args.experiment == "agreement" and len(set(args.seeds)) < 2:
        p.error("agreement compares seeds: give at least two different --seeds")
    for name in args.models:
        s = setting(name, args.cache)
        s = s._replace(samples=args.samples or s.samples)
        if args.experiment == "oracle":
            options = {} if args.highest_target is None else {"highest_target": args.highest_target}
            row = oracle(s, args.seed, args.eval_samples, **options)
        elif args.experiment == "parallel":
            row = parallel(s, args.l0, s.samples, args.seed)
        elif args.experiment == "coactivation":
            row = coactivation(s, args.highest_targets, args.seed, args.eval_samples // 5)
        else:
            row = agreement(s, args.highest_targets, sorted(set(args.seeds)))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
