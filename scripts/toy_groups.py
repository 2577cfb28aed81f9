"""Which of GBA's groups learn the paper toy's features (docs/experiments/prior_free.md, ninth and
tenth steps): per group, its target, how many of its neurons have a decoder row at cosine >= 0.9 to
a true feature (and to how many distinct ones), their mean firing frequency, and the decoder
stability (``gba_lens.saes.decoder_stability``: each row's cosine with itself at ``--stability-from``
of training) of the group's matched and unmatched neurons; per feature missed at 0.9, its best
cosine, the group and firing frequency of that neuron, and how much of the feature its occurrences
leave in the reconstruction error (the mean squared error along the feature's direction over the
inputs where it is active, and its rank among every feature's: 0 leaves the most). One JSON line per
seed. ``--zipf A`` (B, C) runs a Zipf model of the zipf preset instead, on its schedule. The paper's
rule by default; ``--defaults`` trains GBA's defaults instead (the L0 from the data, valley
thresholds, data starts, ``firing_worth``, ``idle_groups``; docs/experiments/prior_free.md, thirty-fourth
to thirty-sixth steps), and ``--no-idle-groups`` takes ``idle_groups`` from them (the defaults until the
thirty-sixth step).

    python scripts/toy_groups.py --seeds 0 1 2                       # the paper's rule (0.1 ... 1e-3)
    python scripts/toy_groups.py --seeds 0 --range 0.1 0.03          # the range that covers f = 0.09
    python scripts/toy_groups.py --seeds 0 1 2 --zipf A
    python scripts/toy_groups.py --seeds 0 1 2 --defaults
    python scripts/toy_groups.py --seeds 0 1 2 --defaults --no-idle-groups
"""

from __future__ import annotations

import argparse
import json

import torch

MATCH_COSINE = 0.9
"""A neuron is matched to a true feature when their cosine (decoder row) reaches this (FRR at 0.9)."""


def group_table(sae, features: torch.Tensor, fired: torch.Tensor,  # type: ignore[no-untyped-def]
                stability: torch.Tensor | None = None, residual_energy: torch.Tensor | None = None) -> dict:
    """The per-group rows and the missed features of one trained SAE (``fired``: [n, d_sae] bool;
    ``stability``: [d_sae] each decoder row's cosine with an earlier one, or None;
    ``residual_energy``: [n_features] what each feature's occurrences leave in the error, or None)."""
    decoder = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True).clamp(min=1e-12)
    unit = features / features.norm(dim=1, keepdim=True)
    cosine = unit @ decoder.T  # [n_features, d_sae]
    ba = sae.bias_adaptation
    group = ba.group.cpu()
    per_neuron, feature_of = cosine.max(0)
    matched = per_neuron >= MATCH_COSINE
    n_groups = len(ba.group_targets)
    neurons = torch.bincount(group, minlength=n_groups).tolist()
    matched_per_group = torch.bincount(group[matched], minlength=n_groups).tolist()
    frequency = fired.float().mean(0)  # each neuron's firing frequency
    group_frequency = ba.group_means(frequency).tolist()
    groups = [{"target": round(target, 5), "neurons": neurons[k], "matched": matched_per_group[k],
               "features": len(set(feature_of[matched & (group == k)].tolist())),
               "frequency": round(group_frequency[k], 5)}
              for k, target in enumerate(ba.group_targets.tolist())]
    if stability is not None:
        for k, row in enumerate(groups):
            for name, members in (("stability_matched", matched), ("stability_unmatched", ~matched)):
                chosen = stability[members & (group == k)]
                row[name] = round(float(chosen.mean()), 4) if len(chosen) else None
    best, neuron = cosine.max(1)
    missed = []
    for i in (best < MATCH_COSINE).nonzero().flatten().tolist():
        row = {"feature": i, "cosine": round(float(best[i]), 3), "group": int(group[neuron[i]]),
               "neuron_frequency": round(float(frequency[neuron[i]]), 4)}
        if residual_energy is not None:
            row["residual"] = round(float(residual_energy[i]), 4)
            row["residual_rank"] = int((residual_energy > residual_energy[i]).sum())
        missed.append(row)
    table = {"frr_09": float((best >= MATCH_COSINE).float().mean()), "l0": round(float(fired.sum(1).float().mean()), 3),
             "groups": groups, "missed": missed}
    if residual_energy is not None:
        table["residual_median"] = round(float(residual_energy.median()), 4)
    return table


def residual_along_features(
    inputs: torch.Tensor, reconstructions: torch.Tensor, features: torch.Tensor, feature_acts: torch.Tensor
) -> torch.Tensor:
    """[n_features] the mean squared reconstruction error along each feature's unit direction over
    the inputs where the feature is active (0 where it never is)."""
    unit = features / features.norm(dim=1, keepdim=True)
    along = ((inputs - reconstructions) @ unit.T) ** 2  # [n, n_features]
    active = (feature_acts != 0).float()
    return (along * active).sum(0) / active.sum(0).clamp(min=1)


def snapshot_decoder(batches, sae, step: int, stability):  # type: ignore[no-untyped-def]
    """Yield ``batches`` unchanged, giving ``sae``'s decoder to ``stability`` just before the
    ``step``-th batch (the trainer takes one batch per step)."""
    for i, batch in enumerate(batches):
        if i == step:
            stability.cosines(sae.W_dec)
        yield batch


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments.paper_toy import PAPER_TOY_SAE, PaperToySetup
    from gba_lens.experiments.gba_modes import PAPER_RULE
    from gba_lens.experiments.overrides import add_gba_option, gba_settings_of
    from gba_lens.experiments.zipf import ZIPF_CONFIGS, zipf_model, zipf_train_config
    from gba_lens.saes.decoder_stability import DecoderStability
    from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
    from gba_lens.training.data import SeededBatches
    from gba_lens.training.methods import build_sae
    from gba_lens.training.train import TrainConfig, train_sae

    setup = PaperToySetup()
    zipf_models = {cfg.name[0]: cfg for cfg in ZIPF_CONFIGS}
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--samples", type=int, default=setup.samples)
    p.add_argument("--range", type=float, nargs=2, default=None, metavar=("HTF", "LTF"),
                   help="GBA's target range (default: the library's 0.1 1e-3)")
    p.add_argument("--zipf", choices=sorted(zipf_models), default=None,
                   help="a Zipf model of the zipf preset (its seed is the run's) instead of the paper toy")
    p.add_argument("--stability-from", type=float, default=0.6, metavar="FRACTION",
                   help="decoder stability: cosine of each row with itself at this fraction of the steps "
                        "(default 0.6, before the zipf schedule's decay)")
    p.add_argument("--defaults", action="store_true",
                   help="train GBA's defaults instead of the paper's rule (--range and --gba still apply)")
    p.add_argument("--no-idle-groups", action="store_true",
                   help="with --defaults: idle_groups=False (the defaults until the thirty-sixth step)")
    add_gba_option(p)
    args = p.parse_args(argv)
    try:  # the zipf schedule, or the paper toy's
        train = (zipf_train_config(args.samples) if args.zipf
                 else TrainConfig(total_samples=args.samples, batch_size=setup.batch_size, lr=setup.lr))
    except ValueError as error:  # TrainConfig refuses fewer samples than one batch
        p.error(f"--samples must be at least one batch: {error}")
    batch_size = train.batch_size
    if not 0 <= args.stability_from < 1:
        p.error(f"--stability-from must be in [0, 1), got {args.stability_from}")
    # the paper's rule, which this script studies, unless --defaults
    if args.no_idle_groups and not args.defaults:
        p.error("--no-idle-groups takes idle_groups from GBA's defaults: use it with --defaults")
    settings = {**({} if args.defaults else PAPER_RULE), **gba_settings_of(p, args)}
    if args.no_idle_groups:
        settings["idle_groups"] = False
    if args.range is not None:
        settings.update(highest_target=args.range[0], lowest_target=args.range[1])

    # as the paper toy's runs (experiments/paper_toy.py): one dictionary, the seed varies the SAE and the stream
    toy = SparseMixtureModel(SparseMixtureConfig(seed=setup.data_seed))
    snapshot_step = int(args.stability_from * (args.samples // batch_size))
    for seed in args.seeds:
        if args.zipf:
            zcfg = zipf_models[args.zipf]
            model, width, sae_settings = zipf_model(zcfg, seed), zcfg.width, settings
            features = model.feature_dict.feature_vectors
        else:
            model, width, sae_settings = toy, setup.width, {**PAPER_TOY_SAE, **settings}
            features = toy.feature_vectors
        torch.manual_seed(seed)
        sae = build_sae("gba", features.shape[1], width, **sae_settings)
        stability = DecoderStability(width)
        train_sae(sae, snapshot_decoder(SeededBatches(model.sample, batch_size, seed=seed), sae,
                                        snapshot_step, stability), train)
        cosine = torch.full((width,), float("nan"))
        cosine[stability.rows] = stability.cosines(sae.W_dec)
        torch.manual_seed(10_000 + seed)
        x, feature_acts = model.sample_with_features(setup.eval_samples)  # the draws of model.sample
        sae.eval()
        with torch.no_grad():
            code = sae.encode(x)
            residual = residual_along_features(x, sae.decode(code), features, feature_acts)
        print(json.dumps({"seed": seed, "model": f"zipf {args.zipf}" if args.zipf else "paper toy",
                          "samples": args.samples, "gba": settings,
                          **group_table(sae, features, code != 0, cosine, residual)}), flush=True)


if __name__ == "__main__":
    main()
