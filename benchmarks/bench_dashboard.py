"""Benchmark: the dashboard's collection pass vs a plain forward pass with the SAE attached.

Same model (the offline stdlib LM), same SAE (random JumpReLU weights at
``blocks.1.hook_resid_pre``, thresholds set so that about 64 features fire per token, as in
trained SAEs of any width), same
token batches, timed alternately in one run. Reported: tokens/s of each side and the ratio
collection / plain (goal: >= 0.5x).

* plain - ``with attach(model, {hook: sae}, error_term=True): model(batch)`` for every batch;
* collection - ``gba_lens.dashboard.collect(model, sae, hook, batches)``: the same forward with
  the per-feature statistics updated from each batch (top-k contexts, band samples, histograms,
  counts). On a HookedTransformer it stops after the hook's block, as shipped;
* collection, full forward - the same with the early stop switched off, so the ratio is the cost
  of the statistics alone.

Usage::

    python benchmarks/bench_dashboard.py [--quick] [--threads 1] [--wall]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

HOOK = "blocks.1.hook_resid_pre"


L0 = 64


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wall", action="store_true", help="wall time instead of process CPU time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall or args.threads > 1 else time.process_time

    import gba_lens.dashboard.stream as stream
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

    def collection_full(sae) -> None:  # noqa: ANN001
        original = stream._stop_layer
        stream._stop_layer = lambda model, hook: None
        try:
            collect(model, sae, HOOK, tokens, batch_size=batch, progress=False)
        finally:
            stream._stop_layer = original

    sides = {"plain forward, SAE attached": plain, "collection": collection, "collection, full forward": collection_full}
    print(f"# Dashboard collection pass vs forward pass\n\nstdlib LM, hook {HOOK}, {n_tok:,} tokens per run "
          f"({batch} x {ctx} per batch), {args.threads} thread(s), {'wall' if clock is time.perf_counter else 'CPU'} "
          f"time, median of {reps}.\n")
    print("| d_sae | plain tok/s | collection tok/s | ratio | collection (full forward) tok/s | ratio |")
    print("|---|---|---|---|---|---|")
    for d_sae in widths:
        sae = make_sae(128, d_sae, model, tokens)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for fn in sides.values():
            fn(sae)  # warm-up
        for rep in range(reps):
            order = list(sides.items()) if rep % 2 == 0 else list(reversed(sides.items()))
            for name, fn in order:
                start = clock()
                fn(sae)
                times[name].append(clock() - start)
            print(f"d_sae={d_sae} rep {rep + 1}/{reps}", file=sys.stderr)
        rate = {name: n_tok / statistics.median(t) for name, t in times.items()}
        p, c, f = rate["plain forward, SAE attached"], rate["collection"], rate["collection, full forward"]
        print(f"| {d_sae:,} | {p:,.0f} | {c:,.0f} | {c / p:.2f}x | {f:,.0f} | {f / p:.2f}x |")
    print("\nGoal: collection / plain >= 0.5x.")


if __name__ == "__main__":
    main()
