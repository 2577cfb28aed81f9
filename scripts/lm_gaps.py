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
METRICS = ("ce_loss_score", "explained_variance")


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments.compare.lm_frontier import DEFAULT_LM
    from gba_lens.experiments.compare.methods import interpolate_at_l0

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="JSON lines of scripts/lm_at_l0.py")
    p.add_argument("--log-l0", action="store_true",
                   help="interpolate in log L0, as the compare preset's frontier does (default: in L0, as "
                        "every LM gap in prior_free.md; on these concave frontiers the log version puts the "
                        "baselines up to 0.005 EV higher)")
    args = p.parse_args(argv)
    runs = [json.loads(line) for name in args.files for line in open(name) if line.strip()]
    for run in runs:  # lines written before --tokens existed trained at the preset's budget
        run.setdefault("tokens", DEFAULT_LM.train_tokens)
        run.setdefault("seed", 0)

    for run in (r for r in runs if r["method"].startswith("gba")):
        gaps = []
        for base in BASELINES:
            points = [b for b in runs if b["method"] == base
                      and all(b[key] == run[key] for key in ("hook", "seed", "tokens"))]
            at = [interpolate_at_l0(points, metric, run["l0"], log_l0=args.log_l0) for metric in METRICS]
            gaps.append(f"{base} " + ("n/a" if None in at else
                                      " / ".join(f"{run[m] - v:+.4f}" for m, v in zip(METRICS, at))))
        print(f"{run['hook']} {run['method']} seed {run['seed']} tokens {run['tokens']} "
              f"{run.get('gba') or ''} L0 {run['l0']:.2f} CE {run['ce_loss_score']:.4f} "
              f"EV {run['explained_variance']:.4f} | minus: " + " | ".join(gaps))


if __name__ == "__main__":
    main()
