"""How much the held-out sample decides a comparison of two SAEs on the stdlib LM
(docs/experiments/compare.md): both scored on the val split's first rows and on rows spread
over it, with the bootstrap standard error (over rows) of the difference of their CE loss
recovered. One JSON line per sample.

    python scripts/lm_at_l0.py --methods gba-geometric topk --l0 4 --tokens 1600000 --seed 1 --save runs/saes
    python scripts/lm_eval_noise.py runs/saes/blocks.1.hook_mlp_out/gba-geometric-s1 \\
        runs/saes/blocks.1.hook_mlp_out/topk-4-s1 --rows 64 256 1024
"""

from __future__ import annotations

import argparse
import json

BATCH_ROWS = 16


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", help="an SAE directory (SAE.load_from_disk) trained at a stdlib LM hook")
    p.add_argument("second", help="another, at the same hook")
    p.add_argument("--rows", type=int, nargs="+", default=[64, 256], help="held-out rows of 128 tokens")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples over rows")
    args = p.parse_args(argv)

    import torch
    from sae_lens import SAE

    from gba_lens.data.stdlib_corpus import stdlib_token_dataset
    from gba_lens.models.stdlib_lm import load_stdlib_lm

    saes = [SAE.load_from_disk(path).eval() for path in (args.first, args.second)]
    hooks = {sae.cfg.metadata.hook_name for sae in saes}
    if len(hooks) != 1 or None in hooks:
        p.error(f"the two SAEs must name one hook in their cfg.json metadata, got {sorted(map(str, hooks))}")
    hook = hooks.pop()
    model = load_stdlib_lm()
    if hook not in model.hook_dict:
        p.error(f"{hook!r} is not a hook of the stdlib LM")

    def splice(sae):  # type: ignore[no-untyped-def]
        return lambda x, hook: sae(x)

    for spread in (False, True):
        for n_rows in args.rows:
            rows = torch.tensor(stdlib_token_dataset(model.tokenizer, 128, "val", max_tokens=n_rows * 128,
                                                     spread=spread)["tokens"])
            losses: dict[str, list[torch.Tensor]] = {k: [] for k in ("clean", "zero", "first", "second")}
            sq_err, sq_dev, acts = [[], []], [], []
            with torch.no_grad():
                for start in range(0, len(rows), BATCH_ROWS):
                    tokens = rows[start:start + BATCH_ROWS]
                    _, cache = model.run_with_cache(tokens, names_filter=[hook])
                    x = cache[hook][:, 1:]  # not the BOS position
                    acts.append(x.reshape(-1, x.shape[-1]))
                    for i, sae in enumerate(saes):
                        sq_err[i].append((sae(x) - x).pow(2).sum(-1).flatten())
                    per_row = lambda hooks: model.run_with_hooks(  # noqa: E731
                        tokens, return_type="loss", loss_per_token=True, fwd_hooks=hooks).mean(1)
                    losses["clean"].append(per_row([]))
                    losses["zero"].append(per_row([(hook, lambda x, hook: torch.zeros_like(x))]))
                    losses["first"].append(per_row([(hook, splice(saes[0]))]))
                    losses["second"].append(per_row([(hook, splice(saes[1]))]))
            loss = {k: torch.cat(v) for k, v in losses.items()}
            all_acts = torch.cat(acts)
            total = (all_acts - all_acts.mean(0)).pow(2).sum()

            def score(name: str, pick: torch.Tensor) -> torch.Tensor:
                zero, clean = loss["zero"][pick].mean(), loss["clean"][pick].mean()
                return (zero - loss[name][pick].mean()) / (zero - clean)

            every = torch.arange(len(rows))
            g = torch.Generator().manual_seed(0)
            gaps = torch.stack([score("first", r) - score("second", r) for r in
                                (torch.randint(0, len(rows), (len(rows),), generator=g) for _ in range(args.resamples))])
            print(json.dumps({
                "hook": hook, "rows": len(rows), "selection": "spread" if spread else "first",
                "ce_loss_score": [round(float(score(n, every)), 4) for n in ("first", "second")],
                "explained_variance": [round(float(1 - torch.cat(e).sum() / total), 4) for e in sq_err],
                "difference": round(float(score("first", every) - score("second", every)), 4),
                "bootstrap_se": round(float(gaps.std()), 4),
                "ablation_nats": round(float(loss["zero"].mean() - loss["clean"].mean()), 4),
            }), flush=True)


if __name__ == "__main__":
    main()
