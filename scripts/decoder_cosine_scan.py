"""The decoder-cosine signal of "Sparse but Wrong" (arXiv 2508.16560) over a budget scan: GBA with
valley thresholds asked for multiples of the true top-W L0 (``target_l0``), and for each SAE the
mean |cosine| between its live latents' decoder rows (c_dec; the paper reads the right L0 off its
curve). docs/experiments/prior_free.md, fifth step. One JSON line per run.

    python scripts/decoder_cosine_scan.py zipf --models 0 1 2 --multiples 0.5 0.75 1 1.5 2 3
    python scripts/decoder_cosine_scan.py synthbench --multiples 0.25 0.5 0.75 1 1.5 2 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from jaxtyping import Bool, Float

from gba_lens.experiments.gba_modes import GBA_MODES


def decoder_cosine(decoder: Float[torch.Tensor, "d_sae d_in"], live: Bool[torch.Tensor, " d_sae"]) -> float:
    """Mean |cos| over the pairs of distinct live latents' decoder rows."""
    rows = torch.nn.functional.normalize(decoder[live].float(), dim=1)
    n = rows.shape[0]
    return float(((rows @ rows.T).abs().sum() - n) / max(1, n * (n - 1)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=("zipf", "synthbench"))
    p.add_argument("--models", type=int, nargs="+", default=[0, 1, 2], help="zipf: indices of A, B, C")
    p.add_argument("--multiples", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="runs/compare_synthbench/cache")
    args = p.parse_args(argv)
    params = {**GBA_MODES["valley+told-l0"]}  # target_l0 as these figures were measured (the paper's options)
    if args.experiment == "zipf":
        from gba_lens.experiments.runner import Job, run_job
        from gba_lens.experiments.runs import MethodSpec
        from gba_lens.experiments.zipf import ZIPF_CONFIGS, zipf_model, zipf_top_width_l0, zipf_train_config

        train = zipf_train_config(1_000_000)  # the budget of scripts/prior_free.py's figures
        for index in args.models:
            zcfg = ZIPF_CONFIGS[index]
            model = zipf_model(zcfg, args.seed)
            top_w = zipf_top_width_l0(model, zcfg.width)
            for multiple in args.multiples:
                spec = MethodSpec("GBA valley + target_l0", "gba", {**params, "target_l0": top_w * multiple})
                record = run_job(Job(spec, zipf_model, (zcfg, args.seed, "cpu"), zcfg.width, train, args.seed, 20_000))
                with torch.no_grad():
                    live = (record.sae.encode(model.sample(20_000)) != 0).any(0)
                r = record.result
                print(json.dumps({"model": zcfg.name.split(":")[0], "multiple": multiple, "top_w_l0": top_w,
                                  "l0": r.l0, "mcc": r.mcc, "f1": r.f1, "explained_variance": r.explained_variance,
                                  "decoder_cosine": decoder_cosine(record.sae.W_dec.detach(), live)}), flush=True)
    else:
        from gba_lens.experiments.compare import methods as M
        from gba_lens.experiments.compare.pool import DEFAULT_SCALE, load_or_build_pool, top_width_l0
        from gba_lens.experiments.compare.synthbench import _data, evaluate, train_config

        scale = dataclasses.replace(DEFAULT_SCALE, samples=750_000)  # as scripts/prior_free.py
        pool = load_or_build_pool(scale, args.cache)
        top_w = top_width_l0(pool.eval_features, scale.width)
        for multiple in args.multiples:
            variant = M.Variant("gba", 1.0, tuple({**params, "target_l0": top_w * multiple}.items()))
            sae = M.train_variant(variant, _data(pool, scale, args.seed), scale.hidden_dim, scale.width,
                                  train_config(scale, "cpu"), args.seed).sae
            r = evaluate(sae, pool, scale.eval_samples)
            every = torch.ones(scale.width, dtype=torch.bool)  # the pool's evaluation reports the dead fraction only
            print(json.dumps({"model": "synthbench", "multiple": multiple, "top_w_l0": top_w, "l0": r["l0"],
                              "mcc": r["mcc"], "f1": r["f1"], "explained_variance": r["explained_variance"],
                              "dead_fraction": r["dead_fraction"],
                              "decoder_cosine": decoder_cosine(sae.W_dec.detach(), every)}), flush=True)


if __name__ == "__main__":
    main()
