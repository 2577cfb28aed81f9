"""Benchmark: data-parallel GBA training, 1 vs 2 processes under torchrun (gloo, CPU).

Samples/s of ``gba_lens.training.train.train_sae`` on in-memory activations (``TensorBatches``,
d_in x d_sae = 256 x 2048, global batch 1024 split over the ranks: strong scaling, the SAE each
run trains is the same), one torch thread per process in both cases. GBA runs at its defaults
(valley thresholds and ``find_l0``: each step also all-reduces the batch's histogram counts, and
each check its pair sums); ``--paper-rule`` measures ``find_l0=False``, whose only collective per
step besides the gradients is the firing statistics'. Each repetition launches
``torchrun --standalone --nproc_per_node N`` on this file; the launches alternate (1 2, 2 1, ...)
so that load from other processes hits both sides alike. Inside a launch, the clock is wall time
from the end of the warm-up steps to the end of training (all ranks finish together: DDP
synchronises every step), so start-up and the first steps are excluded.

Scaling efficiency = (samples/s with 2 processes) / (2 x samples/s with 1 process); 100% is
perfect. On a machine whose cores are shared with other work, the 2-process side competes for
cores and the figure says more about the load than about the code. Usage::

    python benchmarks/bench_distributed.py [--quick] [--reps 2] [--steps 60] [--threads 1] [--paper-rule]

Prints a markdown table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common

_common.setup_environment()

HERE = Path(__file__).resolve().parent
D_IN, D_SAE, BATCH = 256, 2048, 1024


def worker(steps: int, warmup: int, threads: int, paper_rule: bool) -> None:
    """One rank: train for ``warmup + steps`` steps; rank 0 prints the timed samples/s as JSON."""
    import torch

    from gba_lens.data.batches import TensorBatches
    from gba_lens.experiments.gba_modes import PAPER_RULE
    from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
    from gba_lens.training.distributed import is_main_process, world_size
    from gba_lens.training.train import TrainConfig, train_sae

    torch.set_num_threads(threads)
    acts = torch.relu(torch.randn(BATCH * 16, D_IN, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, **(PAPER_RULE if paper_rule else {})))
    started: list[float] = []

    class Timed(TensorBatches):
        def __next__(self) -> torch.Tensor:
            if self.index == warmup:
                started.append(time.perf_counter())
            return super().__next__()

    cfg = TrainConfig(total_samples=(warmup + steps) * BATCH, batch_size=BATCH, device="cpu")
    train_sae(sae, Timed(acts, BATCH), cfg)
    seconds = time.perf_counter() - started[0]
    if is_main_process():
        print(json.dumps({"processes": world_size(), "samples_per_s": steps * BATCH / seconds}), flush=True)


def launch(processes: int, steps: int, warmup: int, threads: int, paper_rule: bool) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           str(Path(__file__).resolve()), "--worker", "--steps", str(steps), "--warmup", str(warmup),
           "--threads", str(threads), *(["--paper-rule"] if paper_rule else [])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode:
        raise RuntimeError(f"torchrun with {processes} processes failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    return float(json.loads(line)["samples_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of 10 timed steps")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per launch")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--paper-rule", action="store_true", help="GBA with find_l0=False (default: GBA's defaults)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    _common.add_clock_args(parser)  # --threads per process; the clock is always wall time
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.steps = 1, 10
    if args.worker:
        worker(args.steps, args.warmup, args.threads, args.paper_rule)
        return 0
    rates: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(args.reps):
        for n in ((1, 2) if rep % 2 == 0 else (2, 1)):
            rates[n].append(launch(n, args.steps, args.warmup, args.threads, args.paper_rule))
            _common.log(f"rep {rep}: {n} process(es): {rates[n][-1]:,.0f} samples/s")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rule = "the paper's rule" if args.paper_rule else "its defaults"
    print(f"GBA SAE {D_IN} x {D_SAE} ({rule}), global batch {BATCH}, {args.threads} torch thread(s) per process, gloo, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; median of {args.reps} launches\n")
    print("| processes | samples/s | speed-up | scaling efficiency |")
    print("|---|---|---|---|")
    print(f"| 1 | {one:,.0f} | 1.00x | 100% |")
    print(f"| 2 | {two:,.0f} | {two / one:.2f}x | {two / one / 2:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
