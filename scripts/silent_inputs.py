"""How much of the data's variance the inputs on which no latent fires leave unexplained, for every
GBA run of a study script (docs/experiments/prior_free.md, twenty-fifth step).

    python scripts/silent_inputs.py scripts/prior_free.py counterexample --samples 500000 --seeds 0 1 2 --modes valley+find-l0 geometric
    python scripts/silent_inputs.py scripts/prior_free.py zipf --samples 1000000 --seeds 0 --modes valley+find-l0 geometric
    python scripts/silent_inputs.py scripts/lm_at_l0.py --methods gba-valley-find-l0 --seed 0

Runs the script given with every GBA training step counted over the last fifth of its run: the
share of the inputs on which no latent fires, and the share of the data's variance they leave
unexplained (:func:`gba_lens.training.l0_course.silent_error`, the sums a ``find_l0`` run's trainer
keeps for its report, here for every run, the paper's rule too). One line per run goes to stderr
when the script ends, in the order the runs trained.
"""

from __future__ import annotations

import runpy
import sys

import torch


def main(argv: list[str]) -> None:
    if not argv or not argv[0].endswith(".py"):
        sys.exit("usage: python scripts/silent_inputs.py SCRIPT.py [ARGS ...]")
    from gba_lens.training.l0_course import L0Course, silent_error
    from gba_lens.training.trainer import GBATrainer

    runs: dict[int, dict] = {}
    real_step = GBATrainer.step

    def step(self: GBATrainer, batch: torch.Tensor):  # type: ignore[no-untyped-def]
        output = real_step(self, batch)
        if L0Course.counts_silent((self.n_training_steps + 1) / self.cfg.total_training_steps):  # the last fifth
            cfg = self.sae.cfg
            label = (f"{cfg.architecture()} d_in {cfg.d_in} d_sae {cfg.d_sae} find_l0 {getattr(cfg, 'find_l0', None)} "
                     f"valley_thresholds {getattr(cfg, 'valley_thresholds', None)}")
            run = runs.setdefault(id(self), {"label": label, "sums": torch.zeros(3), "steps": 0})
            silent, variance, silent_rows = silent_error(output.sae_in, output.sae_out, output.feature_acts)
            n_rows = output.sae_in.reshape(-1, output.sae_in.shape[-1]).shape[0]
            run["sums"] += torch.stack([silent, variance, silent_rows / n_rows]).cpu().float()
            run["steps"] += 1
        return output

    GBATrainer.step = step  # type: ignore[method-assign]

    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        GBATrainer.step = real_step  # type: ignore[method-assign]
        for run in runs.values():
            silent, variance, rows = run["sums"].tolist()
            print(f"silent inputs: {run['label']}: {rows / run['steps']:.3f} of the inputs, "
                  f"{silent / max(variance, 1e-12):.3f} of the variance", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
