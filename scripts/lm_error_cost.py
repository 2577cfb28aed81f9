"""What the stdlib LM pays for an error at a hook, by how the error is spread over its tokens
(docs/experiments/prior_free.md, forty-first step). Noise of one total squared error (a fraction
``--fvu`` of the activations' variance: explained variance 1 - fvu) is added to every token past BOS,
spread two ways:

* ``even``: every token's error has the same norm (an SAE's error in the input's units, at its limit);
* ``relative``: every token's error norm is the same share of the token's own norm (an SAE whose
  reconstruction reads each token divided by its norm, at its limit).

Same explained variance, so what differs is only the CE loss recovered (against zero-ablation, over
held-out rows spread over the val split). One JSON line per hook and fvu.

    python scripts/lm_error_cost.py --fvu 0.02 0.05 0.1
"""

from __future__ import annotations

import argparse
import json

import torch
from jaxtyping import Float

SPREADS = ("even", "relative")
BATCH_ROWS = 16


def noise(x: Float[torch.Tensor, "... d"], squared_error: float, spread: str, generator: torch.Generator
          ) -> Float[torch.Tensor, "... d"]:
    """Noise of total squared error ``squared_error`` over the rows of ``x``, each row's in a random
    direction, its norm the same for every row (``even``) or in proportion to the row's norm
    (``relative``)."""
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {SPREADS}, not {spread!r}")
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    rows = x.reshape(-1, x.shape[-1])
    if spread == "even":
        size = torch.full(x.shape[:-1] + (1,), (squared_error / rows.shape[0]) ** 0.5, dtype=x.dtype, device=x.device)
    else:
        norm = x.norm(dim=-1, keepdim=True)
        size = norm * (squared_error / float(rows.pow(2).sum())) ** 0.5
    return direction * size


def main(argv: list[str] | None = None) -> None:
    from gba_lens.data.stdlib_corpus import stdlib_token_dataset
    from gba_lens.models.stdlib_lm import load_stdlib_lm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fvu", type=float, nargs="+", default=[0.02, 0.05, 0.1],
                   help="the noise's squared error over the activations' variance (1 - explained variance)")
    p.add_argument("--hooks", nargs="+", default=["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"])
    p.add_argument("--rows", type=int, default=128, help="held-out rows of 128 tokens, spread over the val split")
    p.add_argument("--seed", type=int, default=0, help="the noise's directions")
    args = p.parse_args(argv)
    model = load_stdlib_lm()
    for hook in args.hooks:
        if hook not in model.hook_dict:
            p.error(f"{hook!r} is not a hook of the stdlib LM")
    rows = torch.tensor(stdlib_token_dataset(model.tokenizer, 128, "val", max_tokens=args.rows * 128,
                                             spread=True)["tokens"])
    for hook in args.hooks:
        with torch.no_grad():
            acts = torch.cat([model.run_with_cache(rows[i:i + BATCH_ROWS], names_filter=[hook])[1][hook][:, 1:]
                              for i in range(0, len(rows), BATCH_ROWS)])
            variance = float((acts - acts.reshape(-1, acts.shape[-1]).mean(0)).pow(2).sum())
            squared_norms, tokens = float(acts.pow(2).sum()), acts.shape[0] * acts.shape[1]

            def loss(fn=None):  # type: ignore[no-untyped-def]
                hooks = [] if fn is None else [(hook, fn)]
                return torch.cat([model.run_with_hooks(rows[i:i + BATCH_ROWS], return_type="loss", loss_per_token=True,
                                                       fwd_hooks=hooks).mean(1) for i in range(0, len(rows), BATCH_ROWS)]).mean()

            clean = loss()
            zero = loss(lambda x, hook: torch.zeros_like(x))
            for fvu in args.fvu:
                row = {"hook": hook, "fvu": fvu, "rows": len(rows)}
                for spread in SPREADS:
                    g = torch.Generator().manual_seed(args.seed)
                    # the squared error per batch of rows: the batch's share of the whole
                    def add(x, hook, spread=spread, g=g):  # type: ignore[no-untyped-def]
                        past_bos = x[:, 1:]
                        share = float(past_bos.pow(2).sum()) / squared_norms if spread == "relative" \
                            else past_bos.shape[0] * past_bos.shape[1] / tokens
                        out = x.clone()
                        out[:, 1:] += noise(past_bos, fvu * variance * share, spread, g)
                        return out
                    row[f"ce_loss_score_{spread}"] = round(float((zero - loss(add)) / (zero - clean)), 5)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
