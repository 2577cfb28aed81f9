"""Benchmark: end-to-end SAE training throughput on a language model, GBA vs a standard SAE.

Tokens per second through a whole ``runner.run()`` (model forward passes, SAELens's activation
buffer, SAE steps), on the offline stdlib LM (``blocks.1.hook_resid_pre``, d_in 128), CPU. Sides,
timed interleaved in ONE run (A B C D E, then B C D E A, ...) so that load from other processes hits
every side alike:

* **GBA** - ``GBATrainingSAE`` at its defaults (valley thresholds and ``find_l0``) through
  gba_lens's ``GBALanguageModelRunner`` (SAELens's ``LanguageModelSAETrainingRunner`` with
  ``GBATrainer``), i.e. what ``gba-lens train`` runs;
* **GBA, the paper's rule** - the same with ``find_l0=False`` (fixed geometric targets);
* **standard, same runner** - SAELens's ``StandardTrainingSAE`` (L1) of equal width through the
  same ``GBALanguageModelRunner``: the difference to GBA is the SAE alone;
* **standard, SAELens runner** - the same standard SAE through SAELens's own
  ``LanguageModelSAETrainingRunner`` + ``SAETrainer``: the reference a SAELens user has;
* **activations only** - the same number of batches drawn from the runner's
  ``ActivationsStore`` with no SAE: the model + buffer share of every side.

Clock: with one torch thread (default) this process's CPU time (wall time on a shared machine
mostly measures time spent descheduled), else wall time. The ratio is the median over rounds of
per-round ratios (sides timed back to back). Goal: GBA / standard within 10% (>= 0.9x). Usage::

    python benchmarks/bench_lm_training.py [--quick] [--threads 1] [--rounds N]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import warnings
from collections.abc import Callable

import _common

_common.setup_environment()

import torch  # noqa: E402

warnings.filterwarnings("ignore")
logging.getLogger("sae_lens").setLevel(logging.ERROR)

HOOK = "blocks.1.hook_resid_pre"
CONTEXT = 128


def runner_config(sae_cfg, tokens: int, batch: int):  # noqa: ANN001, ANN201
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    return LanguageModelSAERunnerConfig(
        sae=sae_cfg, model_name="gba-lens/stdlib-lm", hook_name=HOOK, context_size=CONTEXT,
        training_tokens=tokens, train_batch_size_tokens=batch,
        n_batches_in_buffer=max(2, 4 * batch // CONTEXT), store_batch_size_prompts=16,
        n_batches_for_norm_estimate=1, lr=3e-3, logger=LoggingConfig(log_to_wandb=False),
        output_path=None, checkpoint_path=None, device="cpu", verbose=False,
    )


def make_sides(model, dataset, width: int, tokens: int, batch: int) -> dict[str, Callable[[], Callable[[], object]]]:  # noqa: ANN001
    """Each side: a builder (untimed: runner construction) returning the timed call."""
    from sae_lens import LanguageModelSAETrainingRunner, StandardTrainingSAEConfig

    from gba_lens.experiments.gba_modes import PAPER_RULE
    from gba_lens.saes.gba import GBATrainingSAEConfig
    from gba_lens.training.lm_runner import GBALanguageModelRunner

    def build(runner_cls, sae_cfg):  # noqa: ANN001, ANN202
        def builder() -> Callable[[], object]:
            torch.manual_seed(0)
            runner = runner_cls(runner_config(sae_cfg, tokens, batch), override_dataset=dataset, override_model=model)
            return runner.run
        return builder

    def activations_only() -> Callable[[], object]:
        torch.manual_seed(0)
        runner = LanguageModelSAETrainingRunner(
            runner_config(StandardTrainingSAEConfig(d_in=128, d_sae=width), tokens, batch),
            override_dataset=dataset, override_model=model)

        def draw() -> None:
            for _ in range(tokens // batch):
                next(runner.activations_store)
        return draw

    return {
        "GBA defaults (gba_lens runner + GBATrainer)": build(GBALanguageModelRunner, GBATrainingSAEConfig(d_in=128, d_sae=width)),
        "GBA, the paper's rule (same runner)": build(GBALanguageModelRunner, GBATrainingSAEConfig(d_in=128, d_sae=width, **PAPER_RULE)),
        "standard L1 (same runner)": build(GBALanguageModelRunner, StandardTrainingSAEConfig(d_in=128, d_sae=width)),
        "standard L1 (SAELens runner + SAETrainer)": build(
            LanguageModelSAETrainingRunner, StandardTrainingSAEConfig(d_in=128, d_sae=width)),
        "activations only (model + buffer, no SAE)": activations_only,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    _common.add_clock_args(parser)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args(argv)
    clock = _common.configure(args.threads, args.wall)

    from gba_lens.models.stdlib_lm import load_stdlib_lm, load_stdlib_tokenizer, stdlib_token_dataset

    width = args.width or (1024 if args.quick else 2048)
    batch = 2048 if args.quick else 4096
    steps = 8 if args.quick else 40
    rounds = args.rounds or (2 if args.quick else 4)
    tokens = steps * batch
    model = load_stdlib_lm("hooked")
    dataset = stdlib_token_dataset(load_stdlib_tokenizer(), CONTEXT, "train", max_tokens=tokens + 8 * batch + 64 * CONTEXT)
    sides = make_sides(model, dataset, width, tokens, batch)
    names = list(sides)
    # warm-up (allocator, lazy imports): one short run of every side, not timed
    for name in names:
        make_sides(model, dataset, width, 2 * batch, batch)[name]()()

    samples = {n: _common.Samples() for n in names}
    for r in range(rounds):
        for name in _common.rotate(names, r):
            call = sides[name]()
            _common.timed(clock, call, samples[name])
            _common.log(f"round {r + 1}/{rounds} {name}: {tokens / samples[name].times[-1]:,.0f} tokens/s")
    seconds = {n: s.times for n, s in samples.items()}

    gba, paper_rule, std, stock, acts = names
    ratio = lambda a, b: _common.paired_ratio(seconds[b], seconds[a])  # noqa: E731
    clock_name = f"{clock.name}, {args.threads} thread(s)"
    print(f"## End-to-end SAE training on the stdlib LM ({HOOK}, d_in 128, width {width}, "
          f"batch {batch} tokens, {steps} steps = {tokens:,} tokens per run, {rounds} rounds, {clock_name})\n")
    print("| side | tokens/s (median) | vs standard, SAELens runner | SAE share of run time |")
    print("|---|---|---|---|")
    act_time = statistics.median(seconds[acts])
    for name in names:
        med = statistics.median(seconds[name])
        share = "-" if name == acts else f"{max(0.0, 1 - act_time / med):.0%}"
        print(f"| {name} | {tokens / med:,.0f} | {ratio(name, stock):.2f}x | {share} |")
    print(f"\nGBA's defaults / standard (same runner): **{ratio(gba, std):.2f}x** throughput; "
          f"GBA's defaults / standard (SAELens runner): **{ratio(gba, stock):.2f}x** (goal >= 0.90x); "
          f"the paper's rule / standard (same runner): {ratio(paper_rule, std):.2f}x.")
    print(f"\nMachine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} thread(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
