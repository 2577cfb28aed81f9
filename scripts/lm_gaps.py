"""GBA's lm points against the k-methods' frontiers, from ``scripts/lm_at_l0.py``'s JSON lines
(docs/experiments/prior_free.md): for each GBA run, its CE loss recovered and explained variance
minus each baseline's, the baseline interpolated piecewise-linearly between the points of the same
hook, seed and budget ("n/a" where GBA's L0 lies outside them); with ``--mean``, one line per GBA
method, hook, budget and options: the gaps averaged over the seeds inside each baseline's sweep.

    python scripts/lm_at_l0.py --methods gba-geometric topk batchtopk --l0 2 3 4 6 8 > runs.jsonl
    python scripts/lm_gaps.py runs.jsonl
    python scripts/lm_gaps.py gba.jsonl topk.jsonl batchtopk.jsonl --log-l0 --mean   # prior_free.md's seed means
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

BASELINES = ("topk", "batchtopk", "matryoshka")
METRICS = ("ce_loss_score", "explained_variance")
MATCH = ("hook", "seed", "tokens", "width")
"""A baseline's points must share these with the GBA run."""


def gaps(run: dict, runs: list[dict], interpolate: Callable[..., float | None]) -> dict[str, tuple[float, float] | None]:
    """``run``'s (CE, EV) minus each baseline's at its L0; None where its L0 lies outside the sweep."""
    out: dict[str, tuple[float, float] | None] = {}
    for base in BASELINES:
        points = [b for b in runs if b["method"] == base and all(b.get(key) == run.get(key) for key in MATCH)]
        at = [interpolate(points, metric, run["l0"]) for metric in METRICS]
        out[base] = None if None in at else (run[METRICS[0]] - at[0], run[METRICS[1]] - at[1])
    return out


def seed_means(runs: list[dict], interpolate: Callable[..., float | None]) -> list[str]:
    """One line per (hook, method, budget, options): mean L0 and, per baseline, the mean gaps over the
    seeds whose L0 lies inside that seed's sweep (how many, of how many)."""
    groups: dict[tuple, list[dict]] = {}
    for run in (r for r in runs if r["method"].startswith("gba")):
        options = json.dumps(run.get("gba") or {}, sort_keys=True)
        key = (run["hook"], run["method"], run["tokens"], run.get("width"), options)
        groups.setdefault(key, []).append(run)
    lines = []
    for (hook, method, tokens, width, options), group in groups.items():
        per_seed = [gaps(run, runs, interpolate) for run in group]
        parts = []
        for base in BASELINES:
            inside = [g[base] for g in per_seed if g[base] is not None]
            if not inside:
                parts.append(f"{base} n/a")
                continue
            ce, ev = (sum(g[i] for g in inside) / len(inside) for i in (0, 1))
            parts.append(f"{base} {ce:+.4f} / {ev:+.4f} ({len(inside)} of {len(group)} seeds)")
        l0 = sum(r["l0"] for r in group) / len(group)
        lines.append(f"{hook} {method} tokens {tokens} width {width} {options if options != '{}' else ''} seeds "
                     f"{sorted(r['seed'] for r in group)} L0 {l0:.2f} | minus: " + " | ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments.compare.lm_frontier import DEFAULT_LM
    from gba_lens.experiments.compare.methods import interpolate_at_l0

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="JSON lines of scripts/lm_at_l0.py")
    p.add_argument("--log-l0", action="store_true",
                   help="interpolate in log L0, as the compare preset's frontier and prior_free.md's LM gaps do "
                        "(default: in L0; on these concave frontiers the log version puts the baselines up to "
                        "0.005 EV higher between points far apart)")
    p.add_argument("--mean", action="store_true", help="the gaps averaged over seeds, one line per method and hook")
    args = p.parse_args(argv)
    runs = [json.loads(line) for name in args.files for line in open(name) if line.strip()]
    for run in runs:  # lines written before --tokens existed trained at the preset's budget (before --width: no width)
        run.setdefault("tokens", DEFAULT_LM.train_tokens)
        run.setdefault("seed", 0)

    def interpolate(points: list[dict], metric: str, l0: float) -> float | None:
        return interpolate_at_l0(points, metric, l0, log_l0=args.log_l0)

    if args.mean:
        print("\n".join(seed_means(runs, interpolate)))
        return
    for run in (r for r in runs if r["method"].startswith("gba")):
        found = gaps(run, runs, interpolate)
        print(f"{run['hook']} {run['method']} seed {run['seed']} tokens {run['tokens']} width {run.get('width')} "
              f"{run.get('gba') or ''} L0 {run['l0']:.2f} CE {run['ce_loss_score']:.4f} "
              f"EV {run['explained_variance']:.4f} | minus: " + " | ".join(
                  f"{base} " + ("n/a" if g is None else f"{g[0]:+.4f} / {g[1]:+.4f}") for base, g in found.items()))


if __name__ == "__main__":
    main()
