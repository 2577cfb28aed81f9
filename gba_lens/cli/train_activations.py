"""``gba-lens train-activations``: a GBA SAE trained on cached activations.

    gba-lens train-activations --activations acts.safetensors --d-sae 4096
    torchrun --nproc_per_node 8 -m gba_lens train-activations ...   # data parallel, same SAE
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gba_lens.cli.command import Command
from gba_lens.saes.gba import GBAOptions
from gba_lens.training.run_options import RunOptions


@dataclass
class TrainActivationsArgs(GBAOptions, RunOptions):
    """Train a GBA SAE on cached activations (safetensors file or SAELens activation cache)."""

    activations: str = ""
    """Path to a .safetensors file of [n, d_in] activations or a SAELens CacheActivationsRunner directory."""
    hook_name: str | None = None
    """Which cached hook to use, when the cache holds several. The SAE is exported for the hook its rows
    come from (its metadata's hook_name), read from the file where it says (a SAELens cache's column, a
    tensor named after its hook, or hook_name metadata); on a residual-stream hook its decoder refit
    lowers the error a LayerNorm reads (refit_error)."""
    d_sae: int = 4096
    """Number of SAE neurons."""
    epochs: float = 1.0
    """Passes over the cached activations."""
    batch_size: int = 1024
    """Activations per step (over all processes under torchrun: each trains on batch_size / N)."""
    lr: float = 3e-3
    """Adam learning rate."""
    device: str = "auto"
    """Torch device (auto: cuda if available, else cpu)."""
    out: str = "runs/gba_sae"
    """Output directory: checkpoints/ (resumable) and sae/ (plain SAELens format)."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints."""
    seed: int = 0
    """Seed for initialisation and shuffling."""

    def check(self) -> None:
        """One-line ``ValueError`` for the first invalid option (before anything is loaded)."""
        from gba_lens.training.train import check_training_numbers

        if not self.activations:
            raise ValueError("--activations is required")
        check_training_numbers(positive={"batch_size": self.batch_size, "d_sae": self.d_sae},
                               non_negative={"checkpoint_every": self.checkpoint_every},
                               positive_finite={"epochs": self.epochs, "lr": self.lr})
        self.check_gba_options(d_sae=self.d_sae)
        self.check_run_options()


def cmd_train_activations(args: TrainActivationsArgs) -> int:
    import torch

    from gba_lens.data.activations import activations_hook, first_non_finite_row, map_activations
    from gba_lens.data.batches import TensorBatches
    from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
    from gba_lens.training.device import resolve_device
    from gba_lens.training.distributed import is_main_process, rank_device
    from gba_lens.training.run_settings import data_fingerprint, file_identity
    from gba_lens.training.train import TrainConfig, train_sae

    args.check()
    device = rank_device(resolve_device(args.device))  # under torchrun: this rank's GPU
    acts = map_activations(args.activations, args.hook_name)  # rows read per batch: O(batch) per rank
    bad = first_non_finite_row(acts)
    if bad is not None:
        raise ValueError(f"{args.activations}: {bad[1]} NaN/inf activation values (first in row {bad[0]})")
    if args.batch_size > acts.shape[0]:
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {acts.shape[0]} activations in {args.activations}")
    total = int(args.epochs * acts.shape[0]) // args.batch_size * args.batch_size
    if total < args.batch_size:
        raise ValueError(f"--epochs {args.epochs} of {acts.shape[0]} activations is less than one batch of {args.batch_size}")
    torch.manual_seed(args.seed)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=acts.shape[1], d_sae=args.d_sae, device=device,
                                              **args.gba_options()))
    # the hook the rows come from, where the file says: exported with the SAE, and read by its refit
    sae.cfg.metadata.hook_name = activations_hook(args.activations, args.hook_name)
    out = Path(args.out)
    cfg = TrainConfig(total_samples=total, batch_size=args.batch_size, lr=args.lr, device=device,
                      checkpoint_dir=str(out / "checkpoints"), checkpoint_every=args.checkpoint_every,
                      wandb_project=args.wandb_project, wandb_run_name=args.wandb_run_name, resume=args.resume,
                      resume_anyway=args.resume_anyway, overwrite=args.overwrite)
    identity = {"activations": {**file_identity(args.activations), "hook_name": args.hook_name,
                                **data_fingerprint(acts)},
                "epochs": args.epochs, "seed": args.seed}
    train_sae(sae, TensorBatches(acts, args.batch_size, seed=args.seed), cfg, run_identity=identity)
    if not is_main_process():  # under torchrun, rank 0 alone reports and writes the SAE
        return 0
    sae.eval()
    with torch.no_grad():
        sample = acts[: min(len(acts), 20_000)].to(device=device, dtype=torch.float32)
        feats = sae.encode(sample)
        recon = sae.decode(feats)
        nmse = ((recon - sample).pow(2).sum(-1).mean() / (sample - sample.mean(0)).pow(2).sum(-1).mean()).item()
        fired = (feats != 0).float().mean(0)
    per_group = sae.bias_adaptation.group_frequencies(fired).tolist()
    targets = sae.bias_adaptation.group_targets.tolist()
    sae.save_inference_model(out / "sae")
    print(f"NMSE {nmse:.4f}  L0 {(feats != 0).float().sum(-1).mean():.2f}  dead {(fired == 0).float().mean():.3f}")
    print("group  target     frequency")
    for k, (t, f) in enumerate(zip(targets, per_group)):
        print(f"{k:5d}  {t:.2e}   {f:.2e}")
    print(f"saved a SAELens SAE to {out / 'sae'} (load with sae_lens.SAE.load_from_disk)")
    return 0


COMMAND = Command("train-activations", TrainActivationsArgs, cmd_train_activations)
