"""Benchmark: GBA's sparse training step vs SAELens's dense standard SAE step, by width.

In ONE run, for d_in 512, batch 1024 and each width, four trainers step on the same in-memory
activations, timed interleaved (rotated each step) so that load from other processes hits every
side alike:

* **standard**: SAELens's ``StandardTrainingSAE`` trained by SAELens's ``SAETrainer`` (the anchor:
  every ratio is a speed-up over this step, the median of per-step ratios);
* **topk sparse**: SAELens's ``TopKTrainingSAE`` with ``use_sparse_activations=True`` and k = L0,
  the field's sparse-activation step (its decoder runs ``torch.sparse.mm``);
* **GBA dense** (``sparse_step="off"``) and **GBA sparse** (``sparse_step="on"``), trained by
  gba_lens's ``GBATrainer`` (SAELens's loop, with torch's fused Adam kernel), and **GBA sparse with
  SAELens's unfused Adam**, which splits the speed-up into the sparse products' part and Adam's.
  These run the paper's rule (``find_l0=False``): the step alone.
* **GBA sparse at its defaults**: the sparse step with what GBA's defaults add to it, the valleys'
  histograms (every step), ``find_l0``'s co-activation check (every ``coactivation.CHECK_EVERY``
  steps) and ``firing_worth``'s measurement (as often, in a run's last 30%: timed here as there).
  To time the checks on every step they run on every step here, timed apart, and count
  1 / CHECK_EVERY of their time towards the step (amortised); the valley windows run and move no
  threshold (``valley_thresholds.STEP = 0`` here), so the density stays where it was put.

GBA's biases are set so that L0 is the requested value (each latent's bias at the quantile of
its pre-activations on a calibration batch that gives it L0 / d_sae firing frequency), and the
bias rule runs with zero step sizes, so the density stays where it was put during the timed steps
(the rule's work is still done). The measured L0 of the timed steps is reported.

A second table holds the width fixed (16,384) and varies L0: where the sparse step stops paying
(the density threshold of ``sparse_step="auto"``). The memory table is the peak of one step
(after a warm-up step, so the optimiser state exists): on CPU the growth of the process's peak
resident memory, measured in a fresh process per side; on CUDA ``max_memory_allocated``.

Timing: with one torch thread (default) the clock is this process's CPU time; with more threads,
or ``--wall``, wall time (on CUDA: wall time with synchronisation). Usage::

    python benchmarks/bench_sparse_step.py [--quick] [--device cpu|cuda] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
from _common import Clock, Instrument, Samples, log, paired_ratio, rotate, timed

_common.setup_environment(TQDM_DISABLE="1")

import torch  # noqa: E402

D_IN = 512
BATCH = 1024
LR = 3e-3
SIDES = ("standard", "topk_sparse", "gba_dense", "gba_sparse", "gba_sparse_defaults", "gba_sparse_unfused")
LABELS = {"standard": "SAELens standard (dense)", "topk_sparse": "SAELens TopK, sparse activations",
          "gba_dense": "GBA, dense step", "gba_sparse": "GBA, sparse step",
          "gba_sparse_defaults": "GBA, sparse step at its defaults",
          "gba_sparse_unfused": "GBA, sparse step, SAELens's unfused Adam"}
GOALS = {16384: 2.0, 65536: 4.0}  # GBA sparse / standard speed-up the issue asks for


@dataclass(frozen=True)
class Plan:
    widths: tuple[int, ...]
    l0: int
    steps: dict[int, int]
    density_width: int
    density_l0s: tuple[int, ...]
    density_steps: int
    memory_widths: tuple[int, ...]


FULL = Plan(widths=(256, 512, 1024, 4096, 16384, 65536), l0=20,
            steps={256: 40, 512: 30, 1024: 20, 4096: 10, 16384: 6, 65536: 3},
            density_width=16384, density_l0s=(20, 160, 640, 1280, 2560), density_steps=3,
            memory_widths=(16384, 65536))
QUICK = Plan(widths=(512, 2048), l0=8, steps={512: 3, 2048: 2}, density_width=2048,
             density_l0s=(8, 64), density_steps=2, memory_widths=(2048,))


# -------------------------------------------------------------------------------- builders
def make_activations(n_rows: int, device: str) -> torch.Tensor:
    """Gaussian 'activations' with an offset (the step's cost does not depend on their structure)."""
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n_rows, D_IN, generator=g) + 0.5).to(device)


def trainer_config(device: str) -> Any:
    from sae_lens import LoggingConfig

    from gba_lens.compat import SAETrainerConfig

    return SAETrainerConfig(
        total_training_samples=10**9, train_batch_size_samples=BATCH, lr=LR, lr_end=LR,
        lr_scheduler_name="constant", device=device, dead_feature_window=1000,
        feature_sampling_window=1000, n_checkpoints=0, checkpoint_path=None,
        save_final_checkpoint=False, logger=LoggingConfig(log_to_wandb=False),
    )


def calibrate_gba(sae: Any, acts: torch.Tensor, l0: int) -> None:
    """Biases at the per-latent quantile that gives each latent an L0 / d_sae firing frequency."""
    with torch.no_grad():
        u = sae.pre_activations(acts)
        q = torch.quantile(u.float().cpu(), 1.0 - l0 / sae.cfg.d_sae, dim=0).to(u.device)
        sae.b_enc.copy_((-q).clamp(-1.0, 0.0).to(sae.b_enc.dtype))


class Side:
    """One trainer, stepped one batch at a time as ``fit()`` does."""

    def __init__(self, name: str, d_sae: int, l0: int, acts: torch.Tensor, device: str,
                 check_clock: Clock | None = None):
        """``check_clock``: the defaults' side runs its co-activation check on every step, timed
        apart on this clock (``measure`` counts it once per CHECK_EVERY steps); None: at its cadence."""
        from sae_lens import SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

        from gba_lens.data.batches import TensorBatches
        from gba_lens.experiments.gba_modes import PAPER_RULE
        from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
        from gba_lens.training.trainer import GBATrainer

        torch.manual_seed(0)
        self.name = name
        data = TensorBatches(acts, BATCH, seed=1)
        if name == "standard":
            sae: Any = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=d_sae, device=device))
            self.trainer = SAETrainer(cfg=trainer_config(device), sae=sae, data_provider=data)
        elif name == "topk_sparse":
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=d_sae, k=l0, device=device,
                                                        use_sparse_activations=True))
            self.trainer = SAETrainer(cfg=trainer_config(device), sae=sae, data_provider=data)
        else:
            # the defaults but the decoder refit after a run's last step (a cost per run: bench_training.py
            # times it), or the step alone
            level = {"decoder_refit": False} if name == "gba_sparse_defaults" else PAPER_RULE
            cfg = GBATrainingSAEConfig(d_in=D_IN, d_sae=d_sae, device=device, gamma_minus=0.0,
                                       gamma_plus=0.0, sparse_step="off" if name == "gba_dense" else "on", **level)
            sae = GBATrainingSAE(cfg)
            self.trainer = GBATrainer(cfg=trainer_config(device), sae=sae, data_provider=data)
            if name == "gba_sparse_defaults":  # firing_worth measures as in the last 30% of a run
                sae.training_horizon = 0
            if name == "gba_sparse_unfused":
                for group in self.trainer.optimizer.param_groups:
                    group["fused"] = None
            sae.initialize_from_batch(acts[:BATCH])
            calibrate_gba(sae, acts, l0)
        self.sae = sae
        self.l0: list[float] = []
        self.check_seconds: list[float] = []  # the co-activation check's time within each step
        self._check: Instrument | None = None
        if name == "gba_sparse_defaults" and check_clock is not None:  # the check on every step, timed apart
            balance = sae.bias_adaptation.coactivation
            object.__setattr__(balance, "due", lambda step: True)
            self._check = Instrument(check_clock, lambda: synchronise(device))
            self._check.wrap(balance, "observe", "check")
            self._check.wrap(balance, "ratio", "check")
            worth = sae.bias_adaptation.firing_worth  # measured at the same cadence (CHECK_EVERY 10)
            if worth is not None:
                object.__setattr__(worth, "due", lambda step, horizon: True)
                self._check.wrap(worth, "observe", "check")
                self._check.wrap(worth, "update", "check")

    def step(self) -> None:
        out = self.trainer.step(next(self.trainer.data_provider))
        self.trainer.n_training_steps += 1
        self.check_seconds.append(self._check.take()["check"] if self._check is not None else 0.0)
        if self.name.startswith("gba"):
            self.l0.append(float(out.feature_acts.bool().float().sum(-1).to_dense().mean()))


def topk_sparse_failure(device: str) -> str | None:
    """Why SAELens's sparse-activation TopK cannot train here (None if it can): one tiny step."""
    from gba_lens.compat import TrainStepInput
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=8, d_sae=32, k=2, device=device, use_sparse_activations=True))
    try:
        sae.training_forward_pass(TrainStepInput(sae_in=torch.randn(4, 8, device=device), coefficients={},
                                                 dead_neuron_mask=None, n_training_steps=0,
                                                 is_logging_step=False)).loss.backward()
    except (NotImplementedError, RuntimeError) as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0][:110]}"
    return None


def synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class WidthResult:
    d_sae: int
    l0_target: int
    times: dict[str, Samples] = field(default_factory=dict)
    l0: dict[str, float] = field(default_factory=dict)
    check_ms: dict[str, float] = field(default_factory=dict)
    """Median time of one co-activation check, per side that runs it."""

    def speedup(self, side: str) -> float:
        return paired_ratio(self.times["standard"].times, self.times[side].times)


def measure(d_sae: int, l0: int, steps: int, sides: tuple[str, ...], clock: Clock, device: str,
            acts: torch.Tensor) -> WidthResult:
    from gba_lens.saes import coactivation

    res = WidthResult(d_sae, l0)
    built = [Side(name, d_sae, l0, acts, device, clock) for name in sides]
    for side in built:  # warm-up: allocates the optimiser state, first sparse structures
        side.step()
        side.l0.clear()
        side.check_seconds.clear()
    res.times = {side.name: Samples() for side in built}

    def run(side: Side) -> Callable[[], None]:
        def go() -> None:
            side.step()
            synchronise(device)
        return go

    for i in range(steps):
        for side in rotate(built, i):
            timed(clock, run(side), res.times[side.name])
    res.l0 = {side.name: statistics.mean(side.l0) for side in built if side.l0}
    for side in built:  # the check, run on every step here, counts once per CHECK_EVERY steps
        if any(side.check_seconds):
            timed_steps = res.times[side.name]
            res.times[side.name] = Samples(
                [t - c * (1 - 1 / coactivation.CHECK_EVERY) for t, c in zip(timed_steps.times, side.check_seconds)],
                timed_steps.wall)
            res.check_ms[side.name] = 1e3 * statistics.median(side.check_seconds)
    return res


# -------------------------------------------------------------------------------- memory
def step_peak_bytes(side_name: str, d_sae: int, l0: int, device: str) -> int:
    """Peak memory one step adds on top of the trained state (run in a child process on CPU)."""
    acts = make_activations(8 * BATCH, device)
    side = Side(side_name, d_sae, l0, acts, device)
    side.step()
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        side.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM)
    base = _status_kib("VmRSS")
    side.step()
    return (_status_kib("VmHWM") - base) * 1024


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_table(plan: Plan, device: str, sides: tuple[str, ...]) -> dict[tuple[str, int], int | None]:
    out: dict[tuple[str, int], int | None] = {}
    for d_sae in plan.memory_widths:
        for side in sides:
            if device == "cuda":
                out[side, d_sae] = step_peak_bytes(side, d_sae, plan.l0, device)
                continue
            if not Path("/proc/self/clear_refs").exists():
                out[side, d_sae] = None
                continue
            # A fresh process per side, with a fixed mmap threshold so that freed blocks go back
            # to the system and the peak is the step's own.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            cmd = [sys.executable, __file__, "--memory-child", side, str(d_sae), str(plan.l0)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[side, d_sae] = int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])
            log(f"memory {side} {d_sae}: {out[side, d_sae] / 2**20:.0f} MiB")
    return out


# -------------------------------------------------------------------------------- report
def report(plan: Plan, widths: list[WidthResult], density: list[WidthResult],
           memory: dict[tuple[str, int], int | None], clock: Clock, device: str, topk_failure: str | None) -> str:
    from gba_lens.saes import coactivation

    lines = [f"# Sparse GBA training step ({device}, {clock.name}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()})", "",
             f"d_in {D_IN}, batch {BATCH}, L0 {plan.l0}. Speed-up = SAELens standard SAE step time / this "
             "step's time (median of per-step ratios, sides interleaved); ms = median step time.", "",
             "The step alone: GBA under the paper's rule. At its defaults: with the valleys' histograms, "
             "`find_l0`'s check and `firing_worth`'s measurement (as in a run's last 30%; their median time "
             f"per check in the last column, counted once per {coactivation.CHECK_EVERY} steps in the speed-up).",
             "",
             "| d_sae | standard ms | TopK sparse | GBA dense | GBA sparse | GBA sparse, unfused Adam | GBA sparse ms | GBA L0 "
             "| goal | GBA sparse at its defaults | ms per check |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in widths:
        goal = GOALS.get(r.d_sae)
        mark = "" if goal is None else f"≥ {goal:g}x: {'met' if r.speedup('gba_sparse') >= goal else 'MISSED'}"
        topk = "fails" if topk_failure else f"{r.speedup('topk_sparse'):.2f}x"
        lines.append(f"| {r.d_sae:,} | {r.times['standard'].median * 1e3:.0f} | {topk} | "
                     f"{r.speedup('gba_dense'):.2f}x | **{r.speedup('gba_sparse'):.2f}x** | "
                     f"{r.speedup('gba_sparse_unfused'):.2f}x | "
                     f"{r.times['gba_sparse'].median * 1e3:.0f} | {r.l0.get('gba_sparse', float('nan')):.1f} | {mark} | "
                     f"{r.speedup('gba_sparse_defaults'):.2f}x | {r.check_ms.get('gba_sparse_defaults', float('nan')):.0f} |")
    if topk_failure:
        lines += ["", f"SAELens's TopK with sparse activations does not train on {device} here "
                  f"(torch {torch.__version__}): `{topk_failure}`"]
    crossing = [r.d_sae for r in widths
                if paired_ratio(r.times["gba_dense"].times, r.times["gba_sparse"].times) >= 1.0]
    lines += ["", "Crossover width (smallest width at which GBA's sparse step is faster than its dense "
              f"step at L0 {plan.l0}): " + (f"{min(crossing):,}" if crossing else "none measured"), ""]
    lines += [f"## Density at d_sae {plan.density_width:,}", "",
              "| L0 | density | GBA sparse / GBA dense speed-up | GBA sparse vs standard |", "|---|---|---|---|"]
    for r in density:
        ratio = paired_ratio(r.times["gba_dense"].times, r.times["gba_sparse"].times)
        measured = r.l0.get("gba_sparse", float("nan"))
        lines.append(f"| {measured:.0f} | {measured / r.d_sae:.4f} | {ratio:.2f}x | {r.speedup('gba_sparse'):.2f}x |")
    lines += ["", "## Peak memory of one step (MiB, above the trained state)", "",
              "| d_sae | " + " | ".join(LABELS[s] for s in SIDES) + " |", "|---" * (len(SIDES) + 1) + "|"]
    for d_sae in plan.memory_widths:
        cells = ["n/a" if memory.get((s, d_sae)) is None else f"{memory[s, d_sae] / 2**20:.0f}" for s in SIDES]
        lines.append(f"| {d_sae:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small widths, few steps (a smoke test)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--memory-child", nargs=3, metavar=("SIDE", "D_SAE", "L0"), help=argparse.SUPPRESS)
    _common.add_clock_args(parser)
    args = parser.parse_args(argv)
    from gba_lens.saes import valley_thresholds

    valley_thresholds.STEP = 0.0  # the defaults' side: its windows run and move no threshold
    if args.memory_child:
        side, d_sae, l0 = args.memory_child
        torch.set_num_threads(args.threads)
        print(json.dumps({"peak_bytes": step_peak_bytes(side, int(d_sae), int(l0), args.device)}))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    clock = _common.configure(args.threads, args.wall or args.device == "cuda")
    plan = QUICK if args.quick else FULL
    acts = make_activations(8 * BATCH, args.device)
    topk_failure = topk_sparse_failure(args.device)
    sides = tuple(s for s in SIDES if not (topk_failure and s == "topk_sparse"))
    widths = []
    for d_sae in plan.widths:
        log(f"width {d_sae} ...")
        widths.append(measure(d_sae, plan.l0, plan.steps[d_sae], sides, clock, args.device, acts))
    density = []
    for l0 in plan.density_l0s:
        log(f"density: L0 {l0} at {plan.density_width} ...")
        density.append(measure(plan.density_width, l0, plan.density_steps, ("standard", "gba_dense", "gba_sparse"),
                               clock, args.device, acts))
    memory = memory_table(plan, args.device, sides)
    text = report(plan, widths, density, memory, clock, args.device, topk_failure)
    print(text)
    out = args.out or (None if args.quick else Path(__file__).with_name(f"results_sparse_step_{args.device}.md"))
    if out is not None:
        out.write_text(text)
        log(f"wrote {out}")


if __name__ == "__main__":
    main()
