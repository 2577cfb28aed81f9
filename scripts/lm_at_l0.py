"""GBA asked for an L0 (``target_l0``) beside the k-methods at the same L0, on the lm preset's data
(docs/experiments/prior_free.md): the stdlib LM's two default hooks, its cached activations, its
schedule and its held-out evaluation (CE loss recovered, explained variance). One JSON line per run.

    python scripts/lm_at_l0.py --l0 6 8 16 32 --methods gba gba-valley
    python scripts/lm_at_l0.py --l0 4 6 --methods topk batchtopk matryoshka
    python scripts/lm_at_l0.py --l0 16 --methods gba --range 0.1 1e-4   # the targets' shape
    python scripts/lm_at_l0.py --methods gba-valley-targets             # no L0 asked
    python scripts/lm_at_l0.py --methods gba-valley-thresholds          # valleys on the geometric targets
    python scripts/lm_at_l0.py --methods gba-search                     # target search on the geometric targets
    python scripts/lm_at_l0.py --methods gba-valley-find-l0 gba-find-l0 # the L0 found from the co-activations
    python scripts/lm_at_l0.py --methods gba-no-anneal                  # the defaults, the rule at full step to the end
    python scripts/lm_at_l0.py --methods gba-one-lr                     # the defaults, one learning rate for every weight
    python scripts/lm_at_l0.py --methods gba-activation-bias            # the defaults with learned activation offsets
    python scripts/lm_at_l0.py --methods gba-per-token gba-per-token-activation-bias   # inputs divided by their norms
    python scripts/lm_at_l0.py --methods gba-no-refit                    # the defaults, the trained decoder kept
    python scripts/lm_at_l0.py --methods gba-unit-mean                   # the defaults before per_token at resid hooks
    python scripts/lm_at_l0.py --methods gba-geometric topk --l0 2 3 4 --tokens 1600000   # 4 epochs
    python scripts/lm_at_l0.py --methods gba-geometric --gba update_interval=8
    python scripts/lm_at_l0.py --methods gba-geometric topk --l0 4 6 8 --eval-tokens 131072   # tighter CE
    python scripts/lm_at_l0.py --methods gba-geometric topk --l0 4 --save runs/saes   # for lm_heldout.py
    python scripts/lm_at_l0.py --methods batchtopk --l0 3 4 --hooks 1                 # mlp_out only
    python scripts/lm_at_l0.py --methods gba-valley-find-l0 topk --l0 16 --width 2048  # wider than the preset's
    python scripts/lm_at_l0.py --methods gba-told topk batchtopk --l0 16 48 --width 1024  # the defaults told an L0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from gba_lens.experiments.gba_modes import GBA_MODES
from gba_lens.saes.hook_defaults import RESIDUAL_HOOK

SINGLE_RUN = {  # GBA with no L0 asked: one run each, whatever --l0 says
    "gba-geometric": tuple(GBA_MODES["geometric"].items()),
    "gba-valley-thresholds": tuple(GBA_MODES["valley"].items()),
    "gba-valley-targets": tuple(GBA_MODES["valley-targets"].items()),
    "gba-search": tuple(GBA_MODES["search"].items()),
    "gba-valley-targets-search": tuple(GBA_MODES["valley-targets+search"].items()),
    "gba-find-l0": tuple(GBA_MODES["find-l0"].items()),
    "gba-valley-find-l0": tuple(GBA_MODES["valley+find-l0"].items()),
    "gba-no-anneal": tuple(GBA_MODES["no-anneal"].items()),
    "gba-one-lr": tuple(GBA_MODES["one-lr"].items()),
    "gba-activation-bias": tuple(GBA_MODES["activation-bias"].items()),
    "gba-per-token": tuple(GBA_MODES["per-token"].items()),
    "gba-per-token-activation-bias": tuple(GBA_MODES["per-token+activation-bias"].items()),
    "gba-no-refit": tuple(GBA_MODES["no-refit"].items()),
    "gba-unit-mean": tuple(GBA_MODES["unit-mean"].items()),
}
METHODS = ("gba", "gba-valley", "gba-told", *SINGLE_RUN, "topk", "batchtopk", "matryoshka")


def told_options(hook: str | None) -> tuple[tuple[str, bool | float | str], ...]:
    """``gba-told``: ``target_l0`` with every option the defaults (``find_l0``) turn on but the valleys, spelled out
    (what ``target_l0`` resolves to by itself since docs/experiments/prior_free.md's fifty-ninth step): the mode
    ``defaults+told-l0``, and at a residual-stream hook per-token inputs and output offsets
    (:mod:`gba_lens.saes.hook_defaults`; the refit's error follows the hook by itself)."""
    told = tuple(GBA_MODES["defaults+told-l0"].items())
    if hook is not None and RESIDUAL_HOOK.search(hook):
        told += (("input_norm", "per_token"), ("activation_bias", True))
    return told


def variant(method: str, l0: float, target_range: tuple[float, ...] = (),
            extra: tuple[tuple[str, int | float], ...] = (), hook: str | None = None):
    from gba_lens.experiments.compare import methods as M

    settings = (("highest_target", target_range[0]), ("lowest_target", target_range[1])) if target_range else ()
    settings += extra
    if method == "gba":  # target_l0 as it trained before the fifty-ninth step (the paper's options)
        return M.Variant("gba", 1.0, (("target_l0", l0), *GBA_MODES["told-l0"].items(), *settings))
    if method == "gba-told":
        return M.Variant("gba", 1.0, (("target_l0", l0), *told_options(hook), *settings))
    if method == "gba-valley":
        return M.Variant("gba", 1.0, (("target_l0", l0), *GBA_MODES["valley+told-l0"].items(), *settings))
    if method in SINGLE_RUN:
        return M.Variant("gba", 1.0, (*SINGLE_RUN[method], *settings))
    return M.l0_knob_sweep(method, [l0])[0]


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments.overrides import add_gba_option, add_set_option, apply_set_option, gba_settings_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--l0", type=float, nargs="+", default=[8.0, 16.0, 32.0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["gba"])
    p.add_argument("--range", type=float, nargs=2, default=(), metavar=("HTF", "LTF"),
                   help="GBA's target range, whose shape target_l0 scales (default 0.1 1e-3)")
    p.add_argument("--out", default="runs/compare_lm", help="where the lm preset keeps its activation cache")
    p.add_argument("--seed", type=int, default=0, help="the SAE's initialisation and the order of its batches")
    p.add_argument("--tokens", type=int, default=None,
                   help="training samples per SAE (default: the preset's 400k; more are epochs over its cache)")
    p.add_argument("--save", default=None, help="also save each SAE (SAELens format, on raw activations) under "
                   "SAVE/<hook>/<method>[-<l0>]-s<seed>")
    p.add_argument("--hooks", type=int, nargs="+", choices=(0, 1), default=[0, 1],
                   help="the preset's hooks to run (0 = resid_pre, 1 = mlp_out; default both)")
    p.add_argument("--eval-tokens", type=int, default=None,
                   help="held-out tokens per evaluation (default: the preset's 32k; the stdlib val split has ~195k)")
    p.add_argument("--width", type=int, default=None,
                   help="latents per SAE (default: the preset's, 4x the hook's width)")
    add_gba_option(p)
    add_set_option(p)
    args = p.parse_args(argv)
    apply_set_option(p, args)
    gba = tuple(gba_settings_of(p, args).items())

    from gba_lens.data import TensorBatches
    from gba_lens.experiments.compare import methods as M
    from gba_lens.experiments.compare.config import CompareConfig
    from gba_lens.experiments.compare.lm_frontier import DEFAULT_LM, default_hooks, evaluate, held_out_data
    from gba_lens.experiments.compare.lm_frontier import lm_train_config, scaled_activations
    from gba_lens.training.lm.sources import load_model, validate_hooks

    scale, cfg = DEFAULT_LM, CompareConfig(preset="lm", out=args.out)
    if args.tokens is not None:
        scale = dataclasses.replace(scale, train_tokens=args.tokens)
    if args.eval_tokens is not None:
        scale = dataclasses.replace(scale, eval_tokens=args.eval_tokens)
    loaded = load_model(cfg.model, "auto", "cpu")
    hooks = [default_hooks(loaded.n_layers)[i] for i in dict.fromkeys(args.hooks)]
    d_ins = validate_hooks(loaded.model, hooks)
    train = lm_train_config(scale, "cpu")
    runs = [(m, l0) for m in args.methods for l0 in (args.l0[:1] if m in SINGLE_RUN else args.l0)]
    for hook in hooks:
        acts, scaling_factor, _, info = scaled_activations(cfg, loaded, hook, scale, "cpu")
        data, ctx = held_out_data(cfg, loaded, info, scale)
        for method, l0 in runs:
            batches = TensorBatches(acts, scale.batch_size, seed=args.seed)
            width = args.width or scale.width_multiple * d_ins[hook]
            sae, _, l0_note = M.train_variant(variant(method, l0, tuple(args.range), gba, hook), batches, acts.shape[1],
                                              width, train, args.seed, hook)
            deployed = M.to_inference(sae, hook)
            m = evaluate(deployed, loaded, data, ctx, hook, scale, scaling_factor, "cpu")
            if args.save is not None:  # the scaling folded in, as SAELens's runner saves
                if deployed.cfg.normalize_activations != "constant_norm_rescale":  # invariant to the factor
                    deployed.fold_activation_norm_scaling_factor(scaling_factor)
                name = method if method in SINGLE_RUN else f"{method}-{l0:g}"
                deployed.save_model(Path(args.save) / hook / f"{name}-s{args.seed}")
            print(json.dumps({"hook": hook, "method": method, "seed": args.seed, "asked_l0": l0, "range": args.range,
                              "tokens": scale.train_tokens, "width": width, "eval_tokens": scale.eval_tokens,
                              "gba": dict(gba), "l0": m["l0"], "ce_loss_score": m["ce_loss_score"],
                              "explained_variance": m["explained_variance"], "dead_fraction": m["dead_fraction"],
                              "l0_note": l0_note}), flush=True)


if __name__ == "__main__":
    main()
