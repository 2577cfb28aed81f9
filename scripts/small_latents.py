"""What the L0 of GBA's defaults is made of on the small model with more latents than features
(docs/experiments/prior_free.md, thirtieth step): the recovery test's model (48 features in 24
dimensions, 2 per input, width 128) on ``prior_free.py small``'s schedule. Per seed, one JSON line:
the L0 on held-out inputs split into the matched latents' firing (a decoder row at |cosine| > 0.9
with a true feature; per feature its most frequent one), the duplicates (the other matched latents)
and the unmatched latents; ``find_l0``'s target scale at the end over its start, and its ratio at
every check (``--trace``).

    python scripts/small_latents.py --seeds 0 1 2 3
    python scripts/small_latents.py --seeds 0 1 2 3 --gba encoder_init=data
"""

from __future__ import annotations

import argparse
import json

import torch

MATCH_COSINE = 0.9
"""A latent is matched to a true feature when the |cosine| of their directions exceeds this."""


def decompose(sae, features: torch.Tensor, fired: torch.Tensor) -> dict:  # type: ignore[no-untyped-def]
    """The L0 of ``fired`` ([n, d_sae] bool) split by what each latent's decoder row matches."""
    decoder = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True).clamp(min=1e-12)
    cosine = (decoder @ (features / features.norm(dim=1, keepdim=True)).T).abs()  # [d_sae, n_features]
    best, feature = cosine.max(1)
    matched = best > MATCH_COSINE
    frequency = fired.float().mean(0)
    first = torch.zeros_like(matched)
    for f in feature[matched].unique():
        members = (matched & (feature == f)).nonzero().flatten()
        first[members[frequency[members].argmax()]] = True
    duplicate = matched & ~first

    def part(mask: torch.Tensor) -> dict:
        return {"latents": int(mask.sum()), "l0": round(float(frequency[mask].sum()), 4)}

    return {"l0": round(float(frequency.sum()), 4), "matched": part(first), "duplicates": part(duplicate),
            "unmatched": part(~matched), "features_matched": int(first.sum())}


def main(argv: list[str] | None = None) -> None:
    from gba_lens.data import SeededBatches
    from gba_lens.experiments.overrides import add_gba_option, gba_settings_of
    from gba_lens.saes.l0_control import L0Control
    from gba_lens.synthetic.paper_model import SparseMixtureModel, small_model_config
    from gba_lens.training.methods import build_sae
    from gba_lens.training.train import TrainConfig, train_sae

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--samples", type=int, default=150_000)
    p.add_argument("--trace", action="store_true", help="also print find_l0's ratio at every check")
    add_gba_option(p)
    args = p.parse_args(argv)
    if args.samples < 256:
        p.error(f"--samples must be at least one batch (256), got {args.samples}")
    settings = gba_settings_of(p, args)
    ratios: list[float] = []
    follow = L0Control.follow

    def traced(self: L0Control, ratio: float, gain: float) -> None:
        ratios.append(round(ratio, 3))
        follow(self, ratio, gain)

    L0Control.follow = traced  # type: ignore[method-assign]
    try:
        for seed in args.seeds:
            ratios.clear()
            model = SparseMixtureModel(small_model_config(seed))
            torch.manual_seed(seed)
            sae = build_sae("gba", 24, 128, **settings)
            train_sae(sae, SeededBatches(model.sample, 256, seed=seed),
                      TrainConfig(total_samples=args.samples, batch_size=256, lr=3e-3,
                                  lr_decay_steps=round(175 * args.samples / 150_000), device="cpu"))
            sae.eval()
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(12345)
                fired = sae.encode(model.sample(5_000)) > 0
            line = {"seed": seed, "gba": settings, **decompose(sae, model.feature_vectors, fired)}
            control = sae.bias_adaptation.l0_control
            line["target_scale"] = round(float(control.relative_scale()), 3) if control is not None else None
            if args.trace:
                line["ratios"] = list(ratios)
            print(json.dumps(line), flush=True)
    finally:
        L0Control.follow = follow  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
