"""One trained GBA SAE's decoder refit by the dense sums and on its sparse codes (docs/experiments/prior_free.md,
fifty-third step): each way's squared error over energy before and after, CPU seconds and each
conjugate-gradient solve's products over the rows. Trains GBA at its defaults (the refit off) on an activation cache of the lm preset, then refits a
copy each way on the cache's last rows. JSON lines.

    python scripts/refit_paths.py runs/compare_lm/cache/lm-blocks.1.hook_resid_pre-<hash> --width 2048 --epochs 2
    python scripts/refit_paths.py CACHE --width 2048 --epochs 2 --reallocations 0 --rows 32768
    python scripts/refit_paths.py CACHE --width 2048 --rows 32768 --tolerances 1e-9 1e-7   # the solver's tolerances
    python scripts/refit_paths.py CACHE --width 16384 --ways sparse                      # too wide for the dense sums
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch


def refit_both(sae: Any, rows: torch.Tensor, reallocations: int | None = None,
               ways: tuple[str, ...] = ("dense", "sparse")) -> list[dict[str, Any]]:
    """Copies of ``sae`` refitted on ``rows`` by the dense sums and on the sparse codes (every width taken
    sparse), ``reallocations`` rounds (None: the module's); each way's result, CPU seconds, and each
    conjugate-gradient solve's products over the rows (its iterations and the first residual's)."""
    from gba_lens.saes import decoder_refit, sparse_refit

    out = []
    widest = {"dense": max(sae.cfg.d_sae, decoder_refit.MAX_LATENTS), "sparse": 0}
    for way in ways:
        products: list[int] = []
        solve = sparse_refit.conjugate_gradients

        def counted(apply, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls = [0]

            def counting(matrix: torch.Tensor) -> torch.Tensor:
                calls[0] += 1
                return apply(matrix)

            found = solve(counting, *args, **kwargs)
            products.append(calls[0])
            return found

        copied = copy.deepcopy(sae)
        rounds = decoder_refit.REALLOCATIONS if reallocations is None else reallocations
        with mock.patch.object(decoder_refit, "MAX_LATENTS", widest[way]), \
                mock.patch.object(sparse_refit, "conjugate_gradients", counted), \
                mock.patch.object(decoder_refit, "REALLOCATIONS", rounds):
            start = time.process_time()
            result = decoder_refit.refit_decoder(copied, rows)
            seconds = time.process_time() - start
        out.append({"way": way, **result, "cpu_seconds": round(seconds, 1), "solves": len(products),
                    "products": products, "sae": copied})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache", help="an lm preset activation cache (OUT/cache/lm-<hook>-<hash>)")
    p.add_argument("--width", type=int, default=2048, help="GBA's d_sae")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over the cache's tokens")
    p.add_argument("--rows", type=int, default=262_144, help="the cache's last rows the refits read")
    p.add_argument("--reallocations", type=int, default=None, help="rounds of reallocation (default: the module's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ways", nargs="+", choices=("dense", "sparse"), default=["dense", "sparse"],
                   help="the refits to make (the dense sums need d_sae^2 floats, several times)")
    p.add_argument("--tolerances", nargs=2, type=float, metavar=("CG", "STEP"), default=None,
                   help="sparse_refit's CG_TOLERANCE and STEP_TOLERANCE (default: the module's)")
    args = p.parse_args(argv)
    if args.tolerances is not None:
        from gba_lens.saes import sparse_refit

        sparse_refit.CG_TOLERANCE, sparse_refit.STEP_TOLERANCE = args.tolerances

    from gba_lens.data.activations import load_activations
    from gba_lens.data.batches import TensorBatches
    from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
    from gba_lens.training.train import TrainConfig, train_sae

    hook = json.loads((Path(args.cache) / "gba_lens_cache.json").read_text())["hook_name"]  # beside token_ids
    acts = load_activations(args.cache, hook)
    torch.manual_seed(args.seed)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=acts.shape[-1], d_sae=args.width, decoder_refit=False))
    batch = 4096
    total = int(args.epochs * len(acts)) // batch * batch
    train_sae(sae, TensorBatches(acts, batch, seed=args.seed),
              TrainConfig(total_samples=total, batch_size=batch, lr=3e-3, lr_decay_steps=total // batch // 5,
                          device="cpu"))
    rows = acts[-args.rows:]
    sae.eval()
    with torch.no_grad():
        l0 = float((sae.encode(rows[:4096]) != 0).sum(1).float().mean())
    for found in refit_both(sae, rows, args.reallocations, tuple(args.ways)):
        found.pop("sae")
        print(json.dumps({"width": args.width, "l0": round(l0, 2), **found}), flush=True)


if __name__ == "__main__":
    main()
