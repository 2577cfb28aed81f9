"""``gba-lens train`` and ``gba-lens cache``: GBA SAEs on language-model hook points.

Options are the fields of :class:`~gba_lens.training.lm.LMTrainConfig` /
:class:`~gba_lens.training.lm.LMCacheConfig`; their docstrings are the ``--help`` text.

    gba-lens train                                   offline: stdlib LM, stdlib corpus, middle layer
    gba-lens train --model gpt2 --hook blocks.6.hook_resid_pre --width 24576 \\
        --dataset monology/pile-uncopyrighted --training-tokens 50000000 --wandb-project gba
    gba-lens train --hook blocks.0.hook_resid_post blocks.1.hook_resid_post   one pass, two SAEs
    gba-lens cache --hook blocks.1.hook_resid_pre --tokens 2000000 --out acts/
    gba-lens train --cache-dir acts/ --hook blocks.1.hook_resid_pre --width 1024 2048 4096
    torchrun --nproc_per_node 8 -m gba_lens train --model gpt2 ...        data parallel, one SAE
    torchrun --nproc_per_node 2 -m gba_lens train --hook H0 H1 --distribute-hooks   one SAE per rank

(docs/experiments/scaling_out.md: what a torchrun launch guarantees, and the GPU recipe.)
"""

from __future__ import annotations

from typing import Any

from gba_lens.cli.command import Command
from gba_lens.training.lm import LMCacheConfig, LMTrainConfig


def cmd_train(args: LMTrainConfig) -> int:
    """Run :func:`train_gba_on_model` and print the held-out tables."""
    from gba_lens.training.lm import train_gba_on_model

    results = train_gba_on_model(args)
    if results is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print()
    print(results.table())
    print(
        f"\ntrained {len(results.saes)} SAE(s) on {args.training_tokens:,} tokens in "
        f"{results.train_seconds:.1f} s ({results.tokens_per_second:,.0f} tokens/s)"
    )
    for name in results.saes:
        print(f"  {name}: {results.out_dir / name}  (sae_lens.SAE.load_from_disk)")
    print(f"results: {results.results_path}; plot: {results.plot_path}")
    return 0


def cmd_cache(args: LMCacheConfig) -> int:
    """Run :func:`cache_lm_activations` and say where the cache is."""
    from gba_lens.training.lm import cache_lm_activations

    path = cache_lm_activations(args)
    print(f"cached activations in {path}; train on them with `gba-lens train --cache-dir {path}`")
    return 0


TRAIN = Command("train", LMTrainConfig, cmd_train)
CACHE = Command("cache", LMCacheConfig, cmd_cache)


def register(sub: Any) -> None:
    """Add ``train`` and ``cache`` to the ``gba-lens`` subcommands (a simple_parsing subparsers)."""
    TRAIN.add_to(sub)
    CACHE.add_to(sub)
