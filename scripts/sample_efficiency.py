"""Samples each method needs on the Zipf models (docs/experiments/prior_free.md, issue 18's item 3).

Each budget is its own run with the zipf preset's schedule scaled to it (lr 1e-2, linear decay
over the last 30% of the steps), so "MCC after n samples" is the MCC of a run of n samples. For
each method: the smallest budget (log-interpolated) at which its MCC reaches 95% of its own MCC at
the largest budget, and the one at which it reaches the best baseline's MCC at the largest budget.
A baseline's sparsity sweep is counted: L1's samples are multiplied by the number of coefficients
it was swept over (3), BatchTopK's by 1 (its k was set to the true L0, which a user does not know).

    python scripts/sample_efficiency.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

BUDGETS = (62_500, 125_000, 250_000, 500_000, 1_000_000)
L1_SWEEP = 3


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments import runner
    from gba_lens.experiments.runner import Job
    from gba_lens.experiments.runs import MethodSpec
    from gba_lens.experiments.zipf import PAPER_TOPK, ZIPF_CONFIGS, zipf_model
    from gba_lens.training.train import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", type=int, default=3)
    args = p.parse_args(argv)
    for zcfg in ZIPF_CONFIGS[: args.models]:
        curves: dict[str, dict[int, list[float]]] = {}
        for seed in args.seeds:
            true_l0 = float(zipf_model(zcfg, seed).activation_generator.firing_probabilities.sum())
            specs = [MethodSpec("GBA", "gba", {}), MethodSpec("GBA valley", "gba", {"valley_thresholds": True}),
                     MethodSpec("L1 coef 0.3", "l1", {"l1_coefficient": 0.3}),
                     MethodSpec("BatchTopK", "batchtopk", {"k": true_l0, **PAPER_TOPK})]
            for budget in BUDGETS:
                train = TrainConfig(total_samples=budget, batch_size=1024, lr=1e-2,
                                    lr_decay_steps=int(0.3 * budget / 1024), device="cpu")
                jobs = [Job(s, zipf_model, (zcfg, seed, "cpu"), zcfg.width, train, seed, 20_000) for s in specs]
                for rec in runner.run_jobs(jobs, 1, progress=False):
                    curves.setdefault(rec.label, {}).setdefault(budget, []).append(rec.result.mcc)
        mean = {m: {b: statistics.mean(v) for b, v in c.items()} for m, c in curves.items()}
        final = {m: c[BUDGETS[-1]] for m, c in mean.items()}
        best_baseline = max(final["L1 coef 0.3"], final["BatchTopK"])
        for method, curve in mean.items():
            sweep = L1_SWEEP if method.startswith("L1") else 1
            row = {"model": zcfg.name.split(":")[0], "method": method, "seeds": len(args.seeds),
                   "mcc": {b: round(v, 4) for b, v in curve.items()},
                   "samples_to_95pct_own": _reach(curve, 0.95 * final[method], sweep),
                   "samples_to_best_baseline": _reach(curve, best_baseline, sweep),
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
