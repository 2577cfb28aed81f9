"""GBA's target modes side by side (docs/experiments/prior_free.md): the geometric default,
``targets="adaptive"``, ``valley_thresholds=True`` and ``target_search=True``, same budgets, on the paper toy, Zipf A/B/C and the synthbench model.

    python scripts/prior_free.py zipf --samples 500000 --seeds 0 1 2
    python scripts/prior_free.py zipf --samples 1000000 --modes valley-targets --baselines   # F1 of the sweeps
    python scripts/prior_free.py zipf --models 1 --modes geometric --gba update_interval=8
    python scripts/prior_free.py toy --samples 300000 --seeds 0 1 2
    python scripts/prior_free.py synthbench --samples 750000 --seeds 0 1 2 --cache runs/compare_synthbench/cache
    python scripts/prior_free.py small --samples 150000 --modes geometric valley+find-l0

    python scripts/prior_free.py counterexample --samples 500000 --seeds 0 1 2 3 4 5 --modes valley+find-l0

``small`` is the paper's model of the library's recovery test (tests/synthetic/test_recovery.py):
48 features in 24 dimensions, 2 per input, width 128, more latents than features.
``counterexample`` is data with no level for ``find_l0``: 128 features, all frequent (0.15 ... 0.05)
and independent, in 64 dimensions, width 128 (tests/saes/test_coactivation.py's falling-L0 test);
each row gives the L0 per seed and the end-of-training warning about the L0 or ``find_l0``, if any.
"""

from __future__ import annotations

import argparse
import json
import sys

from gba_lens.experiments.gba_modes import GBA_MODES

MODES = ({name: GBA_MODES[name] for name in ("geometric", "adaptive", "valley", "valley+adaptive")}
         | {name: GBA_MODES[name] for name in ("told-l0", "valley+told-l0", "defaults+told-l0")}
         | {name: GBA_MODES[name] for name in ("valley-targets", "search", "valley-targets+search", "find-l0",
                                                "valley+find-l0", "no-idle-groups", "no-anneal",
                                                "one-lr", "activation-bias", "per-token",
                                                "per-token+activation-bias", "no-refit")})
"""``told-l0``: ``target_l0`` set to the L0 of the model's W most frequent features (W = the SAE's
width; the whole true L0 when W covers every feature): GBA told what the other modes must find, with the paper's
options (``told-l0``, ``valley+told-l0``: as ``target_l0`` trained before the fifty-ninth step) or the defaults'
(``defaults+told-l0``: as it trains since)."""


def options(mode: str, true_l0: float, settings: dict) -> dict:
    """A mode's GBA options, with ``settings`` (``--gba``) added."""
    told = {"target_l0": true_l0} if mode.endswith("told-l0") else {}
    return {**MODES[mode], **told, **settings}


def zipf(args: argparse.Namespace) -> list[dict]:
    import dataclasses

    from gba_lens.experiments import runner
    from gba_lens.experiments.results import summarise
    from gba_lens.experiments.runner import Job
    from gba_lens.experiments.runs import MethodSpec
    from gba_lens.experiments.zipf import ZIPF_CONFIGS, zipf_model, zipf_top_width_l0, zipf_train_config

    train = zipf_train_config(args.samples)
    gba = [MethodSpec(f"GBA {m}", "gba", MODES[m]) for m in args.modes]
    baselines = zipf_baselines(args.l1, args.k_multiples) if args.baselines else []
    specs = gba + baselines
    out = []
    for zcfg in ZIPF_CONFIGS[: args.models]:
        jobs = []
        for seed in args.seeds:
            top_w_l0 = zipf_top_width_l0(zipf_model(zcfg, seed), zcfg.width)
            params = [options(m, top_w_l0 * args.l0_multiple, args.gba_settings) for m in args.modes]
            params += [{**s.params, "k": s.params["k"] * top_w_l0} if "k" in s.params else s.params for s in baselines]
            jobs += [Job(dataclasses.replace(s, params=q), zipf_model, (zcfg, seed, "cpu"), zcfg.width, train, seed, 20_000)
                     for s, q in zip(specs, params)]
        for r in summarise(runner.run_jobs(jobs, 1, desc=zcfg.name, progress=False), specs):
            out.append(_row(zcfg.name.split(":")[0], r))
    return out


L1_COEFFICIENTS = (0.03, 0.1, 0.3, 1.0, 3.0)
"""``--baselines``: the L1 sweep (the zipf preset's 0.1, 0.3, 1 and a step beyond either end)."""
K_MULTIPLES = (0.5, 0.75, 1.0, 1.5, 2.0)
"""``--baselines``: BatchTopK's k as multiples of the top-W true L0."""


def zipf_baselines(l1_coefficients: list[float], k_multiples: list[float]) -> list:
    """The baselines' sweeps on a Zipf model (``k`` is a multiple of the top-W L0 until a seed's
    model sets it); selection on the plain pre-activations, as the zipf preset's BatchTopK."""
    from gba_lens.experiments.paper_toy import PAPER_TOPK
    from gba_lens.experiments.runs import MethodSpec

    return ([MethodSpec(f"L1 coef {c:g}", "l1", {"l1_coefficient": c}) for c in l1_coefficients]
            + [MethodSpec(f"BatchTopK k={m:g}x top-W", "batchtopk", {"k": m, **PAPER_TOPK}) for m in k_multiples])


def toy(args: argparse.Namespace) -> list[dict]:
    from gba_lens.experiments.paper_toy import PAPER_TOY_SAE, PaperToySetup, run_paper_toy
    from gba_lens.experiments.runs import MethodSpec

    specs = [MethodSpec(f"GBA {m}", "gba", {**options(m, 11.5 * args.l0_multiple, args.gba_settings), **PAPER_TOY_SAE}) for m in args.modes]
    rows, _ = run_paper_toy(PaperToySetup(samples=args.samples, seeds=tuple(args.seeds)), specs,
                            progress=False, workers=1)
    return [_row("paper toy", r) for r in rows]


def synthbench(args: argparse.Namespace) -> list[dict]:
    import dataclasses

    from gba_lens.experiments.compare import methods as M
    from gba_lens.experiments.compare.pool import DEFAULT_SCALE, load_or_build_pool, top_width_l0
    from gba_lens.experiments.compare.synthbench import _run, train_config

    scale = dataclasses.replace(DEFAULT_SCALE, samples=args.samples)
    pool = load_or_build_pool(scale, args.cache)
    train = train_config(scale, "cpu")
    out = []
    top_w = top_width_l0(pool.eval_features, scale.width)
    for mode in args.modes:
        variant = M.Variant("gba", 1.0, tuple(options(mode, top_w * args.l0_multiple, args.gba_settings).items()))
        runs = [_run(variant, pool, scale, train, seed) for seed in args.seeds]
        row = {"model": "synthbench", "method": f"GBA {mode}", "seeds": len(runs),
               "true_l0": runs[0]["true_l0"]}
        for k in ("mcc", "f1", "l0", "explained_variance", "dead_fraction"):
            vals = [r[k] for r in runs]
            row[k] = sum(vals) / len(vals)
            row[k + "_std"] = (sum((v - row[k]) ** 2 for v in vals) / max(1, len(vals) - 1)) ** 0.5
        out.append(row)
    return out


def small(args: argparse.Namespace) -> list[dict]:
    """The recovery test's model and schedule (its learning rate decays over the last 175 of 586
    steps at 150k samples, the same share at other budgets), data and SAE seeded alike."""
    import torch

    from gba_lens.data import SeededBatches
    from gba_lens.synthetic.metrics import evaluate_on_synthetic
    from gba_lens.synthetic.paper_model import SparseMixtureModel, small_model_config
    from gba_lens.training.methods import build_sae
    from gba_lens.training.train import TrainConfig, train_sae

    out = []
    for mode in args.modes:
        runs = []
        for seed in args.seeds:
            model = SparseMixtureModel(small_model_config(seed))
            torch.manual_seed(seed)
            sae = build_sae("gba", 24, 128, **options(mode, 2.0 * args.l0_multiple, args.gba_settings))
            train_sae(sae, SeededBatches(model.sample, 256, seed=seed),
                      TrainConfig(total_samples=args.samples, batch_size=256, lr=3e-3,
                                  lr_decay_steps=round(175 * args.samples / 150_000), device="cpu"))
            runs.append(evaluate_on_synthetic(sae.eval(), model, n_samples=5_000))
        row = {"model": "small", "method": f"GBA {mode}", "seeds": len(runs), "true_l0": 2.0}
        for k in ("mcc", "f1", "l0", "frr_08", "frr_09"):
            row[k + "_per_seed"] = [round(getattr(r, k), 4) for r in runs]
            row[k] = sum(getattr(r, k) for r in runs) / len(runs)
        out.append(row)
    return out


def counterexample(args: argparse.Namespace) -> list[dict]:
    """The falling-L0 test's model and schedule, data and SAE seeded alike."""
    import warnings

    import torch
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    from gba_lens.data import SeededBatches
    from gba_lens.training.methods import build_sae
    from gba_lens.training.train import TrainConfig, train_sae

    out = []
    for mode in args.modes:
        l0s, true_l0s, warned = [], [], []
        for seed in args.seeds:
            model = SyntheticModel(SyntheticModelConfig(
                num_features=128, hidden_dim=64,
                firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.15, min_prob=0.05), seed=seed))
            true_l0 = float(model.activation_generator.firing_probabilities.sum())
            true_l0s.append(true_l0)
            torch.manual_seed(seed)
            sae = build_sae("gba", 64, 128, **options(mode, true_l0 * args.l0_multiple, args.gba_settings))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_sae(sae, SeededBatches(model.sample, 1024, seed=seed),
                          TrainConfig(total_samples=args.samples, batch_size=1024, lr=1e-2, device="cpu"))
            with torch.no_grad():
                l0s.append(round(float((sae.eval().encode(model.sample(20_000)) > 0).float().sum(-1).mean()), 4))
            about_l0 = [str(w.message) for w in caught if "L0 was still" in str(w.message) or "find_l0" in str(w.message)]
            warned.append(about_l0[0][:80] if about_l0 else None)
        out.append({"model": "counterexample", "method": f"GBA {mode}", "seeds": len(l0s),
                    "true_l0": round(sum(true_l0s) / len(true_l0s), 4),
                    "l0_per_seed": l0s, "l0": sum(l0s) / len(l0s), "warned_per_seed": warned})
    return out


def _row(model: str, r) -> dict:
    row = {"model": model, "method": r.method, "seeds": r.seeds, "true_l0": r.true_l0}
    for k in ("mcc", "f1", "l0", "explained_variance", "dead_fraction", "frr_08", "frr_09"):
        row[k], row[k + "_std"] = r.metric(k).mean, r.metric(k).std
    return row


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments.overrides import add_gba_option, add_set_option, apply_set_option, gba_settings_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=("zipf", "toy", "synthbench", "small", "counterexample"))
    p.add_argument("--samples", type=int, default=500_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", type=int, default=3, help="Zipf: the first N of A, B, C")
    p.add_argument("--cache", default="runs/compare_synthbench/cache")
    p.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    p.add_argument("--baselines", action="store_true", help="zipf: also L1 and BatchTopK (--l1, --k-multiples)")
    p.add_argument("--l1", type=float, nargs="+", default=list(L1_COEFFICIENTS), help="--baselines: L1 coefficients")
    p.add_argument("--k-multiples", type=float, nargs="+", default=list(K_MULTIPLES),
                   help="--baselines: BatchTopK's k as multiples of the top-W L0")
    p.add_argument("--l0-multiple", type=float, default=1.0, help="told-l0 modes: ask for this multiple of the L0")
    add_gba_option(p)
    add_set_option(p)
    args = p.parse_args(argv)
    apply_set_option(p, args)
    args.gba_settings = gba_settings_of(p, args)
    if args.baselines and args.experiment != "zipf":
        p.error(f"--baselines runs on the Zipf models only, not {args.experiment}")
    rows = {"zipf": zipf, "toy": toy, "synthbench": synthbench, "small": small,
            "counterexample": counterexample}[args.experiment](args)
    for row in rows:
        print(json.dumps(row), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
