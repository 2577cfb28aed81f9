"""Benchmark: the dashboard's collection pass vs a plain forward pass with the SAE attached.

Same model (the offline stdlib LM), same SAE (random JumpReLU weights at
``blocks.1.hook_resid_pre``, thresholds set so that about 64 features fire per token, as in
trained SAEs of any width), same
token batches, timed alternately in one run. Reported: tokens/s of each side and the ratio
collection / plain (goal: >= 0.5x).

* plain - ``with attach(model, {hook: sae}, error_term=True): model(batch)`` for every batch;
* collection - ``gba_lens.dashboard.collect(model, sae, hook, batches)``: the same forward with
  the per-feature statistics updated from each batch (top-k contexts, band samples, histograms,
  counts). It ends each forward pass once the SAE's activations have been handed over (the
  rest of the model, the decoder and the error term's clean pass are not needed), as shipped.

Timing as in every benchmark (``_common``): CPU time of this process with one torch thread, wall
time with several or ``--wall``; the two sides run in rotated order each repetition; tokens/s
from the median time of each side, and a ratio is the median of per-repetition ratios of sides
timed back to back. Usage::

    python benchmarks/bench_dashboard.py [--quick] [--threads 1] [--wall]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import _common

_common.setup_environment()

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

HOOK = "blocks.1.hook_resid_pre"
L0 = 64  # features firing per token, whatever the width


def make_sae(d_in: int, d_sae: int, model, tokens):  # noqa: ANN001, ANN201
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / d_in**0.5)
        sae.W_dec.copy_(sae.W_enc.T)
        _, cache = model.run_with_cache(tokens[:4], names_filter=[HOOK])
        pre = cache[HOOK].flatten(0, 1) @ sae.W_enc
        sae.threshold.copy_(pre.quantile(1 - L0 / d_sae, dim=0).clamp(min=1e-3))  # each fires on L0/d_sae
    return sae


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    _common.add_clock_args(parser)
    args = parser.parse_args(argv)
    clock = _common.configure(args.threads, args.wall)

    from gba_lens.adapters import attach
    from gba_lens.dashboard import collect
    from gba_lens.models.stdlib_lm import load_stdlib_lm, stdlib_token_dataset

    model = load_stdlib_lm()
    batch, ctx = 32, 128
    n_batches = 2 if args.quick else 8
    reps = 2 if args.quick else 5
    widths = [1024] if args.quick else [1024, 4096, 16384]
    data = stdlib_token_dataset(model.tokenizer, ctx, "val", max_tokens=batch * ctx * n_batches)
    tokens = torch.tensor(data["tokens"])
    batches = list(tokens.split(batch))
    n_tok = tokens.numel()

    def plain(sae) -> None:  # noqa: ANN001
        with torch.no_grad(), attach(model, {HOOK: sae}, error_term=True):
            for b in batches:
                model(b)

    def collection(sae) -> None:  # noqa: ANN001
        collect(model, sae, HOOK, tokens, batch_size=batch, progress=False)

    sides = {"plain": plain, "collection": collection}
    print(f"# Dashboard collection pass vs forward pass\n\nstdlib LM, hook {HOOK}, {n_tok:,} tokens per run "
          f"({batch} x {ctx} per batch), {args.threads} thread(s), {clock.name}, median of {reps}; "
          "ratio = median of per-repetition ratios.\n")
    print("| d_sae | plain tok/s | collection tok/s | ratio |")
    print("|---|---|---|---|")
    for d_sae in widths:
        sae = make_sae(128, d_sae, model, tokens)
        for fn in sides.values():
            fn(sae)  # warm-up
        samples = {name: _common.Samples() for name in sides}
        for rep in range(reps):
            for name in _common.rotate(list(sides), rep):
                _common.timed(clock, lambda fn=sides[name]: fn(sae), samples[name])
            _common.log(f"d_sae={d_sae} rep {rep + 1}/{reps}: "
                        + ", ".join(f"{n} {n_tok / s.times[-1]:,.0f} tok/s" for n, s in samples.items()))
        p, c = (n_tok / samples[name].median for name in sides)
        c_ratio = _common.paired_ratio(samples["plain"].times, samples["collection"].times)
        print(f"| {d_sae:,} | {p:,.0f} | {c:,.0f} | {c_ratio:.2f}x |")
    print("\nGoal: collection / plain >= 0.5x.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
