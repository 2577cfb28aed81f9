"""GBA's lm points against the k-methods' frontiers, from ``scripts/lm_at_l0.py``'s JSON lines
(docs/experiments/prior_free.md): for each GBA run, its CE loss recovered and explained variance
minus each baseline's, the baseline interpolated piecewise-linearly in its measured L0 between the
points of the same hook, seed and budget ("n/a" where GBA's L0 lies outside them).

    python scripts/lm_at_l0.py --methods gba-geometric topk batchtopk --l0 2 3 4 6 8 > runs.jsonl
    python scripts/lm_gaps.py runs.jsonl
"""

from __future__ import annotations

import argparse
import json

BASELINES = ("topk", "batchtopk", "matryoshka")


def interpolate(points: list[tuple[float, float, float]], l0: float) -> tuple[float, float] | None:
    """(CE, EV) at ``l0`` on the line through the sorted (L0, CE, EV) points; None outside them.

    Linear in L0, as every LM gap in prior_free.md since its fifth step; the compare preset's
    ``methods.interpolate_at_l0`` is linear in log L0, for sweeps whose k double between points
    (here they are 1 to 2 apart; on a concave frontier the log version puts the baseline up to
    0.005 EV higher, see prior_free.md's sixth step)."""
    points = sorted(points)
    for (x0, ce0, ev0), (x1, ce1, ev1) in zip(points, points[1:]):
        if x0 <= l0 <= x1 and x1 > x0:
            t = (l0 - x0) / (x1 - x0)
            return ce0 + t * (ce1 - ce0), ev0 + t * (ev1 - ev0)
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="JSON lines of scripts/lm_at_l0.py")
    args = p.parse_args(argv)
    from gba_lens.experiments.compare.lm_frontier import DEFAULT_LM

    runs = [json.loads(line) for name in args.files for line in open(name) if line.strip()]
    for run in runs:  # lines written before --tokens existed trained at the preset's budget
        run.setdefault("tokens", DEFAULT_LM.train_tokens)

    def same_setting(a: dict, b: dict) -> bool:
        return a["hook"] == b["hook"] and a.get("seed", 0) == b.get("seed", 0) and a["tokens"] == b["tokens"]

    for run in (r for r in runs if r["method"].startswith("gba")):
        gaps = []
        for base in BASELINES:
            points = [(b["l0"], b["ce_loss_score"], b["explained_variance"]) for b in runs
                      if b["method"] == base and same_setting(b, run)]
            at = interpolate(points, run["l0"])
            gaps.append(f"{base} " + ("n/a" if at is None else
                                      f"{run['ce_loss_score'] - at[0]:+.4f} / {run['explained_variance'] - at[1]:+.4f}"))
        print(f"{run['hook']} {run['method']} seed {run.get('seed', 0)} tokens {run['tokens']} "
              f"{run.get('gba') or ''} L0 {run['l0']:.2f} CE {run['ce_loss_score']:.4f} "
              f"EV {run['explained_variance']:.4f} | minus: " + " | ".join(gaps))


if __name__ == "__main__":
    main()
