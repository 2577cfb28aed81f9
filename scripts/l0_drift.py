"""GBA's L0 along training, group by group (docs/experiments/prior_free.md, eighth step): every
``--every`` steps, on a fixed probe set, each group's firing frequency over its target and its mean
bias; on a Zipf model also the L0 split by ground truth (latents matched to a true feature at
decoder cosine > 0.9 firing with their feature present / absent, and the unmatched latents). JSON
lines, one per probe, and a last one with the trainer's end-of-run L0 check (the mean training-batch L0 over the
two tenths of the steps before the learning rate decays, and whether it counts as still falling).

    python scripts/l0_drift.py zipf --samples 4000000 --every 250
    python scripts/l0_drift.py lm --samples 1600000 --every 50          # epochs over the lm preset's cache
    python scripts/l0_drift.py lm --samples 400000 --every 25 --gba gamma_minus=0.1 gamma_plus=0.1
    python scripts/l0_drift.py lm --hook 1 --every 1000                 # mlp_out; the last line: the L0 check
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator

import torch

MATCH_COSINE = 0.9
"""A latent is matched to the true feature its decoder row is closest to when their cosine exceeds this."""


class ProbedBatches(Iterator[torch.Tensor]):
    """The training batches, with ``probe(step)`` called before every ``every``-th one (and once
    after the last, from :meth:`finish`): the SAE is then as the steps before it left it."""

    def __init__(self, batches: Iterator[torch.Tensor], every: int, probe: Callable[[int], None]):
        self.batches, self.every, self.probe, self.step = batches, every, probe, 0

    def __next__(self) -> torch.Tensor:
        if self.step % self.every == 0:
            self.probe(self.step)
        self.step += 1
        return next(self.batches)

    def finish(self) -> None:
        self.probe(self.step)


def group_rows(sae, fired: torch.Tensor) -> list[dict]:  # type: ignore[no-untyped-def]
    """Per group: its target, its neurons' mean probe frequency over the target, its mean bias."""
    ba = sae.bias_adaptation
    rows = zip(ba.group_targets.tolist(), ba.group_frequencies(fired).tolist(), ba.group_means(sae.b_enc.detach()).tolist())
    return [{"target": round(target, 5), "frequency_over_target": round(frequency / target, 3), "bias": round(bias, 4)}
            for target, frequency, bias in rows]


@torch.no_grad()
def firing(sae, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """[n, d_sae] 1 where a latent fires on a probe input (the SAE evaluated as at inference)."""
    training = sae.training
    sae.eval()
    fired = sae.encode(x) != 0
    sae.train(training)
    return fired


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments.gba_modes import PAPER_RULE
    from gba_lens.experiments.overrides import add_gba_option, gba_settings_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", choices=("zipf", "lm"))
    p.add_argument("--samples", type=int, default=None, help="training samples (default: the preset's budget)")
    p.add_argument("--every", type=int, default=100, help="steps between probes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=int, default=0, help="zipf: 0, 1, 2 = A, B, C")
    p.add_argument("--hook", type=int, default=0, help="lm: the preset's hook (0 = resid_pre, 1 = mlp_out)")
    p.add_argument("--probe", type=int, default=20_000, help="probe inputs")
    p.add_argument("--out", default="runs/lm_at_l0", help="lm: where the lm preset keeps its activation cache")
    add_gba_option(p)
    args = p.parse_args(argv)
    if args.every < 1:
        p.error(f"--every must be >= 1, got {args.every}")
    settings = {**PAPER_RULE, **gba_settings_of(p, args)}  # the paper's rule, which this script studies

    from gba_lens.training.methods import build_sae
    from gba_lens.training.train import train_sae

    if args.data == "zipf":
        from gba_lens.data import SeededBatches
        from gba_lens.experiments.zipf import ZIPF_CONFIGS, zipf_model, zipf_train_config

        zcfg = ZIPF_CONFIGS[args.model]
        model = zipf_model(zcfg, args.seed)
        torch.manual_seed(10_000 + args.seed)  # the probe: not a training batch
        probe_x, probe_h = model.sample_with_features(args.probe)
        features = model.feature_dict.feature_vectors
        features = features / features.norm(dim=1, keepdim=True)
        train = zipf_train_config(args.samples or 1_000_000)
        batches: Iterator[torch.Tensor] = SeededBatches(model.sample, train.batch_size, seed=args.seed)
        torch.manual_seed(args.seed)  # as the zipf preset's runs (experiments.runs.train_and_evaluate)
        sae = build_sae("gba", zcfg.hidden_dim, zcfg.width, **settings)
        label = zcfg.name.split(":")[0]
    else:
        import dataclasses

        from gba_lens.data import TensorBatches
        from gba_lens.experiments.compare import methods as M
        from gba_lens.experiments.compare.config import CompareConfig
        from gba_lens.experiments.compare.lm_frontier import DEFAULT_LM, default_hooks, lm_train_config
        from gba_lens.experiments.compare.lm_frontier import scaled_activations
        from gba_lens.training.lm.sources import load_model

        scale = DEFAULT_LM if args.samples is None else dataclasses.replace(DEFAULT_LM, train_tokens=args.samples)
        cfg = CompareConfig(preset="lm", out=args.out)
        loaded = load_model(cfg.model, "auto", "cpu")
        hook = default_hooks(loaded.n_layers)[args.hook]
        acts = scaled_activations(cfg, loaded, hook, scale, "cpu")[0]
        probe_x, probe_h, features = acts[: args.probe], None, None  # probe: training rows (the L0's course, not a score)
        train = lm_train_config(scale, "cpu")
        batches = TensorBatches(acts, scale.batch_size, seed=args.seed)
        torch.manual_seed(args.seed)  # as scripts/lm_at_l0.py's runs (compare.methods.train_variant)
        sae = M.build(M.Variant("gba", 1.0, tuple(settings.items())), acts.shape[1],
                      scale.width_multiple * acts.shape[1], "cpu")
        label = hook

    def probe(step: int) -> None:
        fired = firing(sae, probe_x).float()
        line = {"data": label, "seed": args.seed, "gba": settings, "step": step, "l0": round(float(fired.sum(1).mean()), 4),
                "groups": group_rows(sae, fired.mean(0))}
        if features is not None:
            decoder = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
            cosine, feature = (decoder @ features.T).max(1)
            matched = cosine > MATCH_COSINE
            present = probe_h[:, feature] > 0  # [n, d_sae]: the latent's closest feature is in the input
            per_input = lambda mask: round(float((fired * mask).sum(1).mean()), 4)  # noqa: E731
            line.update(matched=int(matched.sum()), l0_matched_feature_present=per_input(present & matched),
                        l0_matched_feature_absent=per_input(~present & matched), l0_unmatched=per_input(~matched))
        print(json.dumps(line), flush=True)

    probed = ProbedBatches(batches, args.every, probe)
    trainer = train_sae(sae, probed, train)
    probed.finish()
    # the end-of-run check of the trainer (gba_lens.training.l0_course) on the training batches' L0
    means = trainer.l0_course.means()
    print(json.dumps({"data": label, "seed": args.seed, "gba": settings, "l0_course": {
        "windows": None if means is None else [round(m, 4) for m in means], "steps": trainer.l0_course.steps,
        "still_falling": trainer.l0_course.still_falling() is not None}}), flush=True)


if __name__ == "__main__":
    main()
