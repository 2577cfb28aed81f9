"""Benchmark: attribution patching over all features of an SAE vs exact patching.

One run measures, on the same model, SAE (error term on) and prompts:

* one forward pass with the SAE attached (``torch.no_grad``): the unit, "1 forward";
* :func:`gba_lens.circuits.attribute` (AtP) over all ``d_sae`` features and the error nodes:
  cost in forward-pass equivalents (goal: <= 3);
* exact patching of each of the ``d_sae`` features (all positions) one at a time, one forward
  pass per feature (:func:`gba_lens.circuits.exact_patching` with ``batch_size=1``): ratio
  exact / AtP (goal: >= 50x at 1,000 candidate features);
* the same exact patching batched (``exact_patching`` default: several features per forward
  pass), for reference.

Times are CPU time of this process with one torch thread (on a shared machine wall time mostly
measures other processes), best of ``--reps`` runs for the short measurements. Usage::

    python benchmarks/bench_attribution.py [--quick] [--d-sae 1000]

``--quick`` times exact patching on a tenth of the features and scales the time up (labelled).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings

import _common

_common.setup_environment()

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def build(d_model: int, n_layers: int, n_ctx: int, d_sae: int, d_vocab: int):  # noqa: ANN201
    from sae_lens import StandardSAE, StandardSAEConfig
    from gba_lens.compat import SAEMetadata
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_ctx=n_ctx, d_head=32, n_heads=d_model // 32,
        d_mlp=4 * d_model, d_vocab=d_vocab, act_fn="gelu", normalization_type="LN", seed=0,
    )
    model = HookedTransformer(cfg).eval()
    hook = f"blocks.{n_layers // 2}.hook_resid_pre"
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.b_enc.fill_(-0.02)
    return model, sae, hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    _common.add_clock_args(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-vocab", type=int, default=2000)
    parser.add_argument("--d-sae", type=int, default=1000, help="candidate features")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args(argv)
    clock = _common.configure(args.threads, args.wall)
    reps = args.reps or (3 if args.quick else 7)

    from gba_lens.adapters import attach
    from gba_lens.circuits import attribute, exact_patching, logit_diff_metric

    model, sae, hook = build(args.d_model, args.layers, args.seq, args.d_sae, args.d_vocab)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, args.d_vocab, (args.batch, args.seq), generator=gen)
    corrupt = clean.clone()
    corrupt[:, args.seq // 2] = torch.randint(0, args.d_vocab, (args.batch,), generator=gen)
    metric = logit_diff_metric([1, 2])
    nodes = [(hook, f, None) for f in range(args.d_sae)]

    with attach(model, {hook: sae}, error_term=True) as att:
        def forward() -> object:
            with torch.no_grad():
                return model(clean)

        t_fwd = _common.repeat(clock, forward, reps * 3).times
        t_atp = _common.repeat(clock, lambda: attribute(att, clean, corrupt, metric, progress=False), reps).times
        n_batched = args.d_sae if not args.quick else max(1, args.d_sae // 10)
        t_batched = _common.repeat(
            clock, lambda: exact_patching(att, clean, corrupt, nodes[:n_batched], metric, progress=False), 1, warmup=0
        ).times
        t_batched = [t * args.d_sae / n_batched for t in t_batched]
        # --quick: time the feature-by-feature loop on a tenth of the features and scale up
        n_naive = args.d_sae if not args.quick else max(1, args.d_sae // 10)
        t_naive = _common.repeat(
            clock,
            lambda: exact_patching(att, clean, corrupt, nodes[:n_naive], metric, batch_size=1, progress=False),
            1, warmup=0,
        ).times
        t_naive = [t * args.d_sae / n_naive for t in t_naive]
        # sanity: AtP agrees with the exact effects it replaces
        res = attribute(att, clean, corrupt, metric, progress=False)
        ex = exact_patching(att, clean, corrupt, nodes[:200], metric, progress=False)
        from gba_lens.circuits.statistics import spearman

        rho = spearman(res.feature_totals(hook)[:200], torch.tensor(ex["exact"].to_numpy()))

    fwd, atp = min(t_fwd), min(t_atp)
    print(
        f"\nModel: HookedTransformer d_model={args.d_model}, {args.layers} layers, d_vocab "
        f"{args.d_vocab}; batch {args.batch} x {args.seq} tokens; SAE d_sae={args.d_sae} at {hook} "
        f"(error term on); CPU, {args.threads} thread(s), {clock.name}; best of {reps} runs for "
        "forward and AtP, one run for exact patching.\n"
    )
    print("| measurement | seconds | forward-pass equivalents | exact / AtP |")
    print("|---|---:|---:|---:|")
    print(f"| 1 forward (SAE attached, no grad) | {fwd:.4f} | 1.00 | |")
    print(f"| AtP over all {args.d_sae} features + error nodes | {atp:.4f} | {atp / fwd:.2f} | |")
    print(f"| AtP (median of {reps}) | {statistics.median(t_atp):.4f} | {statistics.median(t_atp) / statistics.median(t_fwd):.2f} | |")
    scaled = "" if not args.quick else f", timed on {n_naive} and scaled"
    print(f"| exact patching, feature by feature ({args.d_sae} forwards{scaled}) | {t_naive[0]:.3f} | {t_naive[0] / fwd:.0f} | {t_naive[0] / atp:.0f}x |")
    print(f"| exact patching, batched{scaled} | {t_batched[0]:.3f} | {t_batched[0] / fwd:.0f} | {t_batched[0] / atp:.0f}x |")
    print(f"\nSpearman(AtP, exact) over the first 200 features (all positions): {rho:.3f}")
    ok = atp / fwd <= 3.0 and t_naive[0] / atp >= 50
    print(f"Goals (AtP <= 3 forwards, >= 50x faster than feature-by-feature exact patching): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
