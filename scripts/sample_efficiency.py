"""Samples each method needs on the Zipf models and synthbench (docs/experiments/prior_free.md, issue 18's item 3).

Each budget is its own run with the zipf preset's schedule scaled to it (lr 1e-2, linear decay
over the last 30% of the steps), so "MCC after n samples" is the MCC of a run of n samples. For
each method: the smallest budget (log-interpolated) at which its MCC reaches 95% of its own MCC at
the largest budget, and the one at which it reaches the best baseline's MCC at the largest budget.
A baseline's sparsity sweep is counted: L1's samples are multiplied by the number of coefficients
it was swept over (3), BatchTopK's by 1 on the Zipf models (its k was set to the true L0, which a
user does not know) and by 3 on synthbench (the compare preset sweeps k over 0.5, 1, 2 x the true
L0), as Matryoshka's.

    python scripts/sample_efficiency.py --seeds 0 1 2
    python scripts/sample_efficiency.py --synthbench --seeds 0 1 2 --cache runs/compare_synthbench/cache
    python scripts/sample_efficiency.py --toy --seeds 0 1 2
    python scripts/sample_efficiency.py --seeds 0 1 2 --gba-rows "GBA valley targets + search"   # one GBA row

On the paper toy the baseline is TopK at K = 20 (the paper's best row), its sweep counted x 3
(the paper's table sweeps K over 20, 30, 50); the toy's schedule (batch 512, lr 3e-3, no decay).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

from gba_lens.experiments.gba_modes import GBA_MODES as MODES

BUDGETS = (62_500, 125_000, 250_000, 500_000, 1_000_000)
L1_SWEEP = 3
GBA_MODES = {"GBA": MODES["geometric"], "GBA valley": MODES["valley"], "GBA valley targets": MODES["valley-targets"],
             "GBA valley targets + search": MODES["valley-targets+search"], "GBA valley + find_l0": MODES["valley+find-l0"],
             "GBA valley + find_l0, no idle_groups": MODES["no-idle-groups"]}
"""GBA's rows (``--gba-rows``), by the options each sets; every row runs without a sparsity sweep (x 1)."""


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments import runner
    from gba_lens.experiments.runner import Job
    from gba_lens.experiments.runs import MethodSpec
    from gba_lens.experiments.zipf import PAPER_TOPK, ZIPF_CONFIGS, zipf_model, zipf_train_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--synthbench", action="store_true", help="the compare preset's synthbench model instead")
    p.add_argument("--toy", action="store_true", help="the paper toy instead (baseline TopK K = 20)")
    p.add_argument("--cache", default="runs/compare_synthbench/cache")
    p.add_argument("--gba-rows", nargs="+", choices=tuple(GBA_MODES), default=list(GBA_MODES), metavar="MODE",
                   help=f"GBA's rows (default: all of {', '.join(GBA_MODES)}); the baselines always run")
    args = p.parse_args(argv)
    if args.synthbench:
        return synthbench(args)
    if args.toy:
        return toy(args)
    for zcfg in ZIPF_CONFIGS[: args.models]:
        curves: dict[str, dict[int, list[float]]] = {}
        for seed in args.seeds:
            true_l0 = float(zipf_model(zcfg, seed).activation_generator.firing_probabilities.sum())
            specs = [*(MethodSpec(name, "gba", dict(GBA_MODES[name])) for name in args.gba_rows),
                     MethodSpec("L1 coef 0.3", "l1", {"l1_coefficient": 0.3}),
                     MethodSpec("BatchTopK", "batchtopk", {"k": true_l0, **PAPER_TOPK})]
            for budget in BUDGETS:
                train = zipf_train_config(budget)
                jobs = [Job(s, zipf_model, (zcfg, seed, "cpu"), zcfg.width, train, seed, 20_000) for s in specs]
                for rec in runner.run_jobs(jobs, 1, progress=False):
                    curves.setdefault(rec.label, {}).setdefault(budget, []).append(rec.result.mcc)
        _report(zcfg.name.split(":")[0], curves, {m: L1_SWEEP if m.startswith("L1") else 1 for m in curves},
                ("L1 coef 0.3", "BatchTopK"), len(args.seeds))


SYNTH_BUDGETS = (46_875, 93_750, 187_500, 375_000, 750_000)


def synthbench(args: argparse.Namespace) -> None:
    import dataclasses

    from gba_lens.experiments.compare import methods as M
    from gba_lens.experiments.compare.pool import DEFAULT_SCALE, load_or_build_pool
    from gba_lens.experiments.compare.synthbench import _run, train_config

    pool = load_or_build_pool(DEFAULT_SCALE, args.cache)
    k = pool.true_l0
    variants = {**{name: (M.Variant("gba", 1.0, tuple(GBA_MODES[name].items())), 1) for name in args.gba_rows},
                "BatchTopK": (M.l0_knob_sweep("batchtopk", [k])[0], 3),
                "Matryoshka": (M.l0_knob_sweep("matryoshka", [k])[0], 3)}
    curves: dict[str, dict[int, list[float]]] = {}
    for seed in args.seeds:
        for budget in SYNTH_BUDGETS:
            scale = dataclasses.replace(DEFAULT_SCALE, samples=budget)
            for name, (variant, _) in variants.items():
                rec = _run(variant, pool, scale, train_config(scale, "cpu"), seed)
                curves.setdefault(name, {}).setdefault(budget, []).append(rec["mcc"])
    _report("synthbench", curves, {name: sweep for name, (_, sweep) in variants.items()},
            ("BatchTopK", "Matryoshka"), len(args.seeds))


def toy(args: argparse.Namespace) -> None:
    from gba_lens.experiments.paper_toy import PAPER_TOY_SAE, PaperToySetup, run_paper_toy
    from gba_lens.experiments.runs import MethodSpec
    from gba_lens.experiments.zipf import PAPER_TOPK

    specs = [*(MethodSpec(name, "gba", {**GBA_MODES[name], **PAPER_TOY_SAE}) for name in args.gba_rows),
             MethodSpec("TopK K=20", "topk", {"k": 20, **PAPER_TOPK, **PAPER_TOY_SAE})]
    curves: dict[str, dict[int, list[float]]] = {}
    for budget in BUDGETS:  # the paper toy's own harness: its schedule, dictionary and evaluation
        _, records = run_paper_toy(PaperToySetup(samples=budget, seeds=tuple(args.seeds)), specs,
                                   progress=False, workers=1)
        for rec in records:
            curves.setdefault(rec.label, {}).setdefault(budget, []).append(rec.result.mcc)
    _report("paper toy", curves, {**{name: 1 for name in args.gba_rows}, "TopK K=20": 3}, ("TopK K=20",),
            len(args.seeds))


def _report(model: str, curves: dict[str, dict[int, list[float]]], sweeps: dict[str, int],
            baselines: tuple[str, ...], n_seeds: int) -> None:
    mean = {m: {b: statistics.mean(v) for b, v in c.items()} for m, c in curves.items()}
    final = {m: c[max(c)] for m, c in mean.items()}
    best_baseline = max(final[b] for b in baselines)
    for method, curve in mean.items():
        row = {"model": model, "method": method, "seeds": n_seeds, "mcc": {b: round(v, 4) for b, v in curve.items()},
               "samples_to_95pct_own": _reach(curve, 0.95 * final[method], sweeps[method]),
               "samples_to_best_baseline": _reach(curve, best_baseline, sweeps[method]),
               "best_baseline_mcc": round(best_baseline, 4)}
        print(json.dumps(row), flush=True)


def _reach(curve: dict[int, float], level: float, sweep: int) -> float | None:
    """Samples (x the sweep) at which the curve first reaches ``level``, log-interpolated between
    budgets; None if it never does."""
    points = sorted(curve.items())
    if points[0][1] >= level:
        return points[0][0] * sweep
    for (b0, m0), (b1, m1) in zip(points, points[1:]):
        if m1 >= level:
            t = (level - m0) / (m1 - m0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0))) * sweep
    return None


if __name__ == "__main__":
    main()
