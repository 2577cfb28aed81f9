"""The IOI attribution check over SAE seeds (docs/experiments/prior_free.md, thirty-second and
thirty-third steps): per seed, small GBA SAEs trained on the offline IOI model's activations
(:func:`gba_lens.experiments.ioi_attribution.train_ioi_saes`, as the library's tests train them),
then per hook the logit difference's change from ablating the ten features AtP ranks first, from ten
random active ones (mean of 20), their ratio, the change from ablating the ten that exact ablation
one at a time ranks first, AtP's share of it, and the SAE's L0 on the prompts' real tokens; and the
Spearman correlation of AtP's estimates with exact ablation over the top 40 nodes (the test asks
over 0.6): one JSON line per seed. The test asks a ratio of 3 at the attention hooks and 1.5 at
``blocks.1.hook_resid_pre`` of SAEs from random starts, and the Spearman bar of SAEs at GBA's defaults.

    python scripts/ioi_attribution.py --seeds 0 1 2 3 4 5 6 7                          # GBA's defaults
    python scripts/ioi_attribution.py --seeds 0 1 2 3 4 5 6 7 --gba encoder_init=random  # the test's SAEs
"""

from __future__ import annotations

import argparse
import json
import warnings


def main(argv: list[str] | None = None) -> None:
    from gba_lens import attach
    from gba_lens.circuits import ablate_features, attribute, verify_attribution
    from gba_lens.circuits.ioi import mean_logit_diff
    from gba_lens.experiments.ioi_attribution import (HOOKS, STEPS, exact_top_features, real_token_codes,
                                                       top_and_random_ablation, train_ioi_saes)
    from gba_lens.experiments.overrides import add_gba_option, gba_settings_of
    from gba_lens.models.ioi_model import ioi_heldout_prompts, load_ioi_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="SAE seeds (the test's is 0)")
    p.add_argument("--steps", type=int, default=STEPS, help=f"optimiser steps per SAE (the test's: {STEPS})")
    add_gba_option(p)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    settings = gba_settings_of(p, args)
    warnings.filterwarnings("ignore", category=UserWarning)  # 300 steps: the L0-still-falling warning
    model = load_ioi_model()
    prompts = ioi_heldout_prompts(model, "pairs", n_prompts=64, seed=2)

    def metric(logits):  # type: ignore[no-untyped-def]
        return mean_logit_diff(logits, prompts)

    for seed in args.seeds:
        saes = train_ioi_saes(model, seed, args.steps, **settings)
        line: dict = {"seed": seed, "steps": args.steps, "gba": settings}
        with attach(model, saes, error_term=True) as attached:
            result = attribute(attached, prompts.clean_tokens, prompts.corrupted_tokens, metric, progress=False)
            check = verify_attribution(attached, prompts.clean_tokens, prompts.corrupted_tokens, result, metric, k=40,
                                       progress=False)
            line["spearman"] = round(float(check.attrs["spearman"]), 3)
            exact = exact_top_features(attached, prompts.clean_tokens, metric)
            codes = real_token_codes(attached, prompts.clean_tokens, prompts.attention_mask)
            for hook in HOOKS:
                top, random = top_and_random_ablation(attached, prompts.clean_tokens, codes[hook], metric, hook,
                                                      result.feature_totals(hook))
                l0 = float((codes[hook] > 0).sum(-1).float().mean())
                exact_top = float(ablate_features(attached, prompts.clean_tokens, {hook: exact[hook]}, metric).delta)
                line[hook] = {"top": round(top, 3), "random": round(random, 3), "ratio": round(top / random, 2),
                              "exact_top": round(exact_top, 3), "atp_share": round(top / exact_top, 2),
                              "l0": round(l0, 2)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
