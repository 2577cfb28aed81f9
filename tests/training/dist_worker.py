"""One rank of the distributed tests (launched by ``torchrun`` from ``test_distributed.py``).

    dist_worker.py OUT [--fail-rank R --fail-at N --fail-mode raise|hang] [--sparse-step on] [--valley [--targets valleys]] [--target-l0 X] [--search] [--defaults]
    dist_worker.py OUT --runs RUNS.json

Trains a tiny GBA SAE on a seeded stream (the global batches of ``BATCH`` rows) with checkpoints
in OUT/checkpoints; rank 0 writes the final state dict to OUT/state.safetensors. With --fail-rank,
that rank raises, hangs or (diverge) shifts one of its GBA biases when asked for global batch N.
With --runs, one SAE (or --multi's two) per entry of RUNS.json ({name: [options]}), one after the other
in this process group, each in OUT/name as if launched alone (the module constants an entry sets are
undone after it): one launch instead of one per entry, whose start-up (two processes importing SAELens)
is most of a run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gba_lens.data.batches import SeededBatches  # noqa: E402
from gba_lens.training.distributed import is_main_process, rank  # noqa: E402
from gba_lens.training.train import TrainConfig, train_sae  # noqa: E402
from training_builders import InterruptedAt, relu_sampler, tiny_gba_sae, use_search_constants  # noqa: E402

D_IN, D_SAE, STEPS, BATCH = 12, 48, 24, 64
CHECKED = 1e9
"""``refit_check.TRUSTED_FIRINGS`` with ``--checked-refit``: every refit is checked on held-out rows."""
SPARSE_REFIT_ABOVE = 16
"""``decoder_refit.MAX_LATENTS`` with ``--sparse-refit``: the 48-latent SAE is refitted on its sparse codes."""


VALLEY_WINDOW = 256
"""Valley-threshold window of the tests (samples): 4 global batches, so that a run applies 6."""
DEFAULTS_VALLEY_WINDOW = 5 * BATCH
"""With GBA's defaults (valleys and find_l0): windows of 5 global batches, so that the checkpoint of
step 12 falls inside one."""
VALLEY_GROUP_FRACTION = 1e-9
"""``targets="valleys"`` in the tests: a group follows its valleys from the first (this noise has few)."""


def make_sae(sparse_step="auto", valley=False, target_l0=None, targets="geometric", search=False, find_l0=False,
             encoder_init="random", firing_worth=0.0, activation_bias=False, input_norm="unit_mean", decoder_refit=False,
             refit_error=None):
    # update_interval 3: windows spanning several steps (and a checkpoint mid-window); valley and
    # find_l0 None: GBA's defaults, bar decoder_refit, which reads every row of runs this short (so that a
    # resume is inside them) and has its own two-rank test
    return tiny_gba_sae(D_IN, D_SAE, update_interval=3, sparse_step=sparse_step, valley_thresholds=valley,
                        target_l0=target_l0, targets=targets, target_search=search, find_l0=find_l0,
                        encoder_init=encoder_init, firing_worth=firing_worth, activation_bias=activation_bias,
                        input_norm=input_norm, decoder_refit=decoder_refit, refit_error=refit_error)


def make_stream():
    return SeededBatches(relu_sampler(D_IN, scale=3), BATCH, seed=5)


def make_cfg(out: str) -> TrainConfig:
    return TrainConfig(total_samples=STEPS * BATCH, batch_size=BATCH, lr=1e-2, device="cpu",
                       checkpoint_dir=os.path.join(out, "checkpoints"), checkpoint_every=4,
                       lr_decay_steps=8, log_every=5)


def fails_at(inner, n, mode, sae):
    """The global stream, failing when asked for batch ``n``: raise, hang, or (diverge) shift one
    of this rank's GBA biases so that the ranks' SAEs drift apart."""

    def fail():
        if mode == "hang":
            time.sleep(3600)
        if mode == "diverge":
            sae.b_enc.data[0] += 0.5
            return
        raise RuntimeError(f"injected failure at batch {n}")

    return InterruptedAt(inner, n, fail)


HOOKS = ("hook_a", "hook_b")


def train_multi(out: str | None, world: int = 1, this_rank: int = 0) -> dict:
    """Two GBA SAEs (one per hook, one pass) by ``GBAMultiSAETrainer``, on the seeded global
    batches; with ``world`` > 1 this rank trains data parallel on its rows of each batch."""
    from gba_lens.training.lm.runner import GBAMultiSAETrainer
    from gba_lens.training.train import _trainer_config

    stream = make_stream()
    share = BATCH // world

    def batches():
        while True:
            rows = next(stream)[this_rank * share : (this_rank + 1) * share]
            yield {"hook_a": rows, "hook_b": rows.flip(-1) * 0.5 + 1}

    # One learning rate: with the encoder's faster late rate (encoder_lr_scale) one of hook_a's valley-histogram
    # samples sits on a bin edge that the all-reduced gradient's rounding moves, and the two runs part by 5e-4
    # (the defaults' data-parallel run, encoder group included, is test_gbas_defaults_resume_...).
    saes = {hook: tiny_gba_sae(D_IN, D_SAE, seed=i, update_interval=2, sparse_step="off", encoder_lr_scale=1.0)
            for i, hook in enumerate(HOOKS)}
    cfg = _trainer_config(TrainConfig(total_samples=STEPS * BATCH, batch_size=share, lr=1e-2, device="cpu",
                                      lr_decay_steps=8, log_every=5))
    trainer = GBAMultiSAETrainer(cfg=cfg, saes=saes, hook_names={h: h for h in HOOKS}, data_provider=batches(),
                                 evaluator=None, save_checkpoint_fn=None, data_parallel=world > 1)
    trainer.fit()
    state = {f"{hook}.{k}": v.contiguous() for hook, sae in saes.items() for k, v in sae.state_dict().items()}
    if out is not None:
        save_file(state, os.path.join(out, "state.safetensors"))
    return state


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--runs", default=None, help="a JSON file {name: [options]}: each trained in OUT/name")
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-at", type=int, default=-1)
    parser.add_argument("--fail-mode", default="raise", choices=["raise", "hang", "diverge"])
    parser.add_argument("--sparse-step", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--multi", action="store_true", help="two SAEs by GBAMultiSAETrainer (data parallel)")
    parser.add_argument("--valley", action="store_true", help="GBA with valley thresholds")
    parser.add_argument("--target-l0", type=float, default=None, help="GBA with a requested L0")
    parser.add_argument("--targets", default="geometric", help="GBA's target mode (valleys needs --valley)")
    parser.add_argument("--search", action="store_true", help="GBA with target_search (SEARCH_CONSTANTS)")
    parser.add_argument("--find-l0", action="store_true", help="GBA with find_l0")
    parser.add_argument("--defaults", action="store_true", help="GBA's defaults (valleys and find_l0)")
    parser.add_argument("--encoder-init", default="random", choices=["random", "data"], help="GBA's encoder_init")
    parser.add_argument("--firing-worth", type=float, default=0.0, help="GBA's firing_worth")
    parser.add_argument("--activation-bias", action="store_true", help="GBA with activation_bias")
    parser.add_argument("--input-norm", default="unit_mean", help="GBA's input_norm")
    parser.add_argument("--decoder-refit", action="store_true", help="GBA with decoder_refit")
    parser.add_argument("--refit-error", default=None, help="GBA's refit_error (unset: absolute, no hook named)")
    parser.add_argument("--checked-refit", action="store_true",
                        help="every decoder refit checked on held-out rows (refit_check.TRUSTED_FIRINGS unreachable)")
    parser.add_argument("--sparse-refit", action="store_true",
                        help="the decoder refit solved on the sparse codes (decoder_refit.MAX_LATENTS under D_SAE)")
    return parser.parse_args(argv)


def train_one(args: argparse.Namespace) -> None:
    """The SAE ``args`` describe, trained on the seeded stream; the module constants its options set are
    undone afterwards."""
    from gba_lens.saes import decoder_refit, refit_check, target_adaptation, valley_thresholds

    with pytest.MonkeyPatch.context() as patch:
        if args.checked_refit:
            patch.setattr(refit_check, "TRUSTED_FIRINGS", CHECKED)
        if args.sparse_refit:
            patch.setattr(decoder_refit, "MAX_LATENTS", SPARSE_REFIT_ABOVE)
        if args.valley or args.defaults:
            window = DEFAULTS_VALLEY_WINDOW if args.defaults else VALLEY_WINDOW
            patch.setattr(valley_thresholds, "WINDOW_SAMPLES", window)
        if args.targets == "valleys":
            patch.setattr(target_adaptation, "MIN_VALLEY_FRACTION", VALLEY_GROUP_FRACTION)
        if args.search:
            use_search_constants(patch.setattr)
        stream = make_stream()
        unset = args.defaults  # GBA's defaults: valley thresholds and find_l0 left to resolve
        sae = make_sae(args.sparse_step, None if unset else args.valley, args.target_l0, args.targets, args.search,
                       None if unset else args.find_l0, args.encoder_init, args.firing_worth, args.activation_bias,
                       args.input_norm, args.decoder_refit, args.refit_error)
        if rank() == args.fail_rank:
            stream = fails_at(stream, args.fail_at, args.fail_mode, sae)
        train_sae(sae, stream, make_cfg(args.out))
        if is_main_process():
            save_file({k: v.contiguous() for k, v in sae.state_dict().items()},
                      os.path.join(args.out, "state.safetensors"))


def train_entry(args: argparse.Namespace) -> None:
    """``--multi``'s two SAEs, else the one SAE ``args`` describe (OUT/state.safetensors)."""
    if not args.multi:
        train_one(args)
        return
    from gba_lens.training.distributed import ensure_process_group, world_size

    ensure_process_group()
    train_multi(args.out if is_main_process() else None, world_size(), rank())


def main() -> None:
    args = parse()
    if args.runs is None:
        train_entry(args)
        return
    with open(args.runs) as f:
        runs = json.load(f)
    for name, options in runs.items():
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        train_entry(parse([out, *options]))


if __name__ == "__main__":
    main()
