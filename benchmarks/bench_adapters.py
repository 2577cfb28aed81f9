"""Benchmark: forward pass with an SAE spliced by gba_lens.attach vs SAELens's HookedSAETransformer.

Same model object (a HookedSAETransformer, which gba_lens.attach also accepts), same SAE, same
tokens; the two sides are timed alternately in one run and the ratio gba_lens / SAELens is
reported for the fastest run of each and for the medians (goal: <= 1.1x). Rows:

* steady state - SAE attached once, then ``model(tokens)``: ``attach(...)`` held vs
  ``model.add_sae(sae)`` held.
* per call - attach, forward, detach on every call: ``with attach(...): model(tokens)`` vs
  ``model.run_with_saes(tokens, saes=[sae])`` (attach() also runs a 2-token probe forward).
* with error term - as above with ``error_term=True`` / ``use_error_term=True``.

All forwards run under ``torch.no_grad()`` (inference). The "no SAE" row times the same call
against itself: its distance from 1.0x is the measurement noise. Usage::

    python benchmarks/bench_adapters.py [--quick] [--threads 1]
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


def build(d_model: int, n_layers: int, n_ctx: int, d_sae: int):  # noqa: ANN201
    from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
    from gba_lens.compat import SAEMetadata
    from transformer_lens import HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_ctx=n_ctx, d_head=32, n_heads=d_model // 32,
        d_mlp=4 * d_model, d_vocab=1000, act_fn="gelu", normalization_type="LN", seed=0,
    )
    model = HookedSAETransformer(cfg).eval()
    hook = f"blocks.{n_layers // 2}.hook_resid_post"
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae,
                                        metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
    return model, sae, hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~1 min)")
    _common.add_clock_args(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-sae", type=int, default=4096)
    args = parser.parse_args(argv)
    clock = _common.configure(args.threads, args.wall)
    reps = 4 if args.quick else 12

    from gba_lens.adapters import attach

    model, sae, hook = build(args.d_model, args.layers, args.seq, args.d_sae)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 1000, (args.batch, args.seq), generator=gen)

    rows: list[tuple[str, list[float], list[float]]] = []
    with torch.no_grad():
        for error_term in (False, True):
            label = "error term" if error_term else "no error term"
            # Sanity: both splicers compute the same thing.
            with attach(model, {hook: sae}, error_term=error_term):
                ours_out = model(tokens)
            ref_out = model.run_with_saes(tokens, saes=[sae], use_error_term=error_term)
            torch.testing.assert_close(ours_out, ref_out, atol=1e-4, rtol=1e-4)

            t_a, t_b = _interleaved_steady(clock, model, sae, hook, tokens, error_term, reps)
            rows.append((f"steady state (attached once), {label}", t_a, t_b))

            def per_call_ours() -> object:
                with attach(model, {hook: sae}, error_term=error_term):
                    return model(tokens)

            def per_call_ref() -> object:
                return model.run_with_saes(tokens, saes=[sae], use_error_term=error_term)

            a, b = _common.time_pair(clock, per_call_ours, per_call_ref, reps)
            t_a, t_b = a.times, b.times
            rows.append((f"per call (attach + forward + detach), {label}", t_a, t_b))
        a, b = _common.time_pair(clock, lambda: model(tokens), lambda: model(tokens), reps)
        t_a, t_b = a.times, b.times
        rows.append(("no SAE (noise floor: same call twice)", t_a, t_b))

    print(
        f"\nModel: HookedSAETransformer d_model={args.d_model}, {args.layers} layers; batch "
        f"{args.batch} x {args.seq} tokens; SAE d_sae={args.d_sae} at {hook}; CPU, "
        f"{args.threads} thread(s); {clock.name} per forward over {reps} alternated runs "
        "(torch.no_grad). Ratio = gba_lens / SAELens; 'best' uses the fastest run of each "
        "(least disturbed by other processes), 'median' the medians.\n"
    )
    print(
        "| scenario | gba_lens.attach best (ms) | SAELens best (ms) | ratio (best) "
        "| ratio (median) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, ours, ref in rows:
        best = min(ours) / min(ref)
        median = statistics.median(ours) / statistics.median(ref)
        print(
            f"| {name} | {min(ours) * 1e3:.1f} | {min(ref) * 1e3:.1f} | {best:.3f}x "
            f"| {median:.3f}x |"
        )
    return 0


def _interleaved_steady(  # noqa: ANN202
    clock, model, sae, hook, tokens, error_term, reps, per_block=2  # noqa: ANN001
):
    """Steady-state forward times of both splicers.

    Only one SAE can sit at a hook point at a time, so the two are alternated in blocks: attach
    (untimed), one warm-up forward, ``per_block`` timed forwards, detach; then the same with
    SAELens's ``add_sae`` / ``reset_saes``. Returns all timed forwards of each.
    """
    from gba_lens.adapters import attach

    times = {"ours": _common.Samples(), "ref": _common.Samples()}

    def timed(side: str) -> None:
        model(tokens)  # warm-up after (re)attaching
        for _ in range(per_block):
            _common.timed(clock, lambda: model(tokens), times[side])

    for i in range(max(1, reps // per_block)):
        for side in (("ours", "ref") if i % 2 == 0 else ("ref", "ours")):
            if side == "ours":
                with attach(model, {hook: sae}, error_term=error_term):
                    timed(side)
            else:
                model.add_sae(sae, use_error_term=error_term)
                try:
                    timed(side)
                finally:
                    model.reset_saes()
    return times["ours"].times, times["ref"].times


if __name__ == "__main__":
    sys.exit(main())
