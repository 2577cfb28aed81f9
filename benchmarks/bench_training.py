"""Benchmark: GBA training throughput vs SAELens's standard SAE, against the fp32 GEMM roofline.

In ONE run, on the same in-memory activations, SAE sizes and batch (1024), timed interleaved
(A B C, then B C A, ...) so that load from other processes hits every side alike:

* **GBA** (``gba_lens.saes.GBATrainingSAE``: JumpReLU gate, K = 10 groups, bias update every step;
  the dense step, ``sparse_step="off"``, as ``bench_sparse_step.py`` measures the sparse one), in
  three configurations, each measured against its own interleaved standard SAE: its **defaults**
  (valley thresholds and ``find_l0``: what a user gets with nothing set) from a new SAE, the
  defaults **settled** (timed after ``Plan.settle`` untimed steps, once the L0 has fallen: the step
  loop only) and **the paper's rule** (``find_l0=False``: fixed geometric targets; ``--gba`` picks
  one), through the project's harness,
  ``gba_lens.training.train.train_sae`` on a ``TensorBatches`` stream (one whole ``fit()`` per
  repetition), and as a raw step loop (``GBATrainer.step`` per batch, timed per step).
* **standard**: SAELens's ``StandardTrainingSAE`` (L1) trained by SAELens's own ``SAETrainer``
  with the same trainer settings (constant lr, no W&B, no checkpoints), the same two ways
  (``SAETrainer.fit()`` and ``SAETrainer.step`` per batch).
* **roofline**: the six fp32 GEMMs of one SAE training step, timed with ``torch.matmul`` on the
  SAE's own shapes and layouts (counted with torch.profiler: both SAEs run exactly these six
  ``aten::mm`` per step). FLOP model, B batch, d = d_in, m = d_sae, 2*B*d*m flops each:
  forward ``u = (x - b_dec) @ W_enc`` and ``x_hat = z @ W_dec``; backward ``dL/dW_dec = z^T g``,
  ``dL/dz = g W_dec^T``, ``dL/dW_enc = (x - b_dec)^T g_u`` and ``dL/d(x - b_dec) = g_u W_enc^T``
  (needed only for b_dec's gradient, since SAELens subtracts b_dec from the input), so
  12*B*d*m flops per step (= forward + 2x forward for the backward). A step can never be faster
  than its GEMMs, so "% of roofline" = GEMM time / step time.
* **bias adaptation share**: the controller's ``observe`` + ``update`` (and GBA's
  ``project_weights``) are wrapped with timers inside the real GBA steps of the raw loop, so they
  run on the real pre-activations ([B, d_sae]); the per-step share is the median over steps of
  BA time / step time. At the defaults ``find_l0``'s co-activation check (every few steps) is timed
  too, and bias adaptation in total (the rule, the valleys' histograms and windows, the checks) is
  the sum over every timed step over the steps' sum: amortised, since the windows and checks run on
  some steps only. The goal applies to that total.
* **generator**: the paper's ``SparseMixtureModel.sample`` through ``SeededBatches`` (batch B),
  interleaved with GBA steps on the same dimensions, and the end-to-end ``train_sae`` throughput
  on the live generator stream.

Timing: with one torch thread (default) the clock is this process's CPU time (on a shared
machine, wall time mostly measures the time spent descheduled); with more threads it is wall
time. Medians over repetitions after warm-up; a ratio (GBA / standard, BA share, generator /
training) is the median of per-repetition ratios of sides timed back to back. Usage::

    python benchmarks/bench_training.py [--quick] [--gba all|defaults|settled|paper-rule] [--threads 1] [--wall]
    python benchmarks/bench_training.py --firing-worth 0.3       # the defaults with another firing_worth share
    python benchmarks/bench_training.py --gba defaults --early   # timed where idle_groups measures
                                        [--profile] [--out FILE]

Prints markdown tables; a full run of both configurations also writes them to
``benchmarks/results_training.md`` (``--quick`` and the variants write only where ``--out`` says).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
from _common import Clock, Instrument, Samples, log, paired_ratio, rotate, timed

_common.setup_environment(TQDM_DISABLE="1")  # one progress bar per fit() would flood the output

import torch  # noqa: E402

from gba_lens.experiments.gba_modes import PAPER_RULE  # noqa: E402
from gba_lens.experiments.overrides import add_set_option, apply_set_option  # noqa: E402

BATCH = 1024
SIZES: tuple[tuple[int, int], ...] = ((512, 4096), (128, 512))
GOALS = {(512, 4096): 0.95, (128, 512): 0.90}  # GBA / standard samples/s
BA_GOAL = 0.05  # bias adaptation share of the step time
LR = 3e-3


@dataclass(frozen=True)
class Plan:
    """How long to measure. Step counts are per SAE size (keyed by d_sae)."""

    steps: dict[int, int]
    """Timed steps of the interleaved raw step loops (GBA, standard, GEMMs)."""
    fit_steps: dict[int, int]
    """Steps per ``fit()`` run of the harness measurement."""
    reps: int
    """Timed ``fit()`` runs per trainer (and end-to-end generator runs)."""
    warmup: int
    """Untimed warm-up steps before each timed loop."""
    data_batches: int
    """In-memory activation tensor size, in batches."""
    gen_steps: dict[int, int]
    """Timed generator batches (interleaved with GBA steps), per GBA d_sae."""
    e2e_steps: dict[int, int]
    """Steps per end-to-end ``train_sae`` run on the live generator, per GBA d_sae."""
    settle: dict[int, int]
    """Untimed GBA steps before the defaults are timed again once their L0 has settled, per d_sae."""


FULL = Plan(steps={4096: 40, 512: 300}, fit_steps={4096: 4, 512: 40}, reps=9, warmup=3,
            data_batches=16, gen_steps={4096: 15, 1024: 60, 512: 60},
            e2e_steps={4096: 5, 1024: 20, 512: 20}, settle={4096: 300, 512: 2000})
QUICK = Plan(steps={4096: 3, 512: 30}, fit_steps={4096: 1, 512: 10}, reps=2, warmup=1,
             data_batches=4, gen_steps={4096: 2, 1024: 10, 512: 10},
             e2e_steps={4096: 1, 1024: 5, 512: 5}, settle={4096: 2, 512: 10})
SETTLED = "defaults, settled"
"""The defaults timed after ``Plan.settle`` untimed steps: the codes of a new SAE are dense for its
first steps, where the co-activation check reads more pairs and decodes densely; a run spends nearly
all its steps after its L0 has settled."""


# -------------------------------------------------------------------------------- builders
def make_activations(d_in: int, d_sae: int, n_rows: int) -> torch.Tensor:
    """In-memory 'activations': samples of the paper's sparse mixture (n = d_sae features)."""
    from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel

    model = SparseMixtureModel(SparseMixtureConfig(n_features=d_sae, d=d_in, seed=0))
    torch.manual_seed(0)
    return torch.cat([model.sample(BATCH) for _ in range(n_rows // BATCH)])


def build_gba(d_in: int, d_sae: int, **options: Any) -> Any:
    """GBA with the dense step: under ``sparse_step="auto"`` a wide SAE whose L0 has fallen switches
    to the sparse step, which skips GEMM work (a share of "roofline" over 100%) and computes the
    controller's statistics inside its kernel (unseen by the timers); bench_sparse_step.py measures it."""
    from gba_lens.training.methods import build_sae

    torch.manual_seed(0)
    return build_sae("gba", d_in, d_sae, **{"sparse_step": "off", **options})


def build_standard(d_in: int, d_sae: int) -> Any:
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig

    torch.manual_seed(0)
    return StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae))


def saelens_trainer_config(n_steps: int) -> Any:
    """SAELens trainer settings equal to what ``train_sae`` uses (constant lr, no W&B/ckpt)."""
    from sae_lens import LoggingConfig

    from gba_lens.compat import SAETrainerConfig

    return SAETrainerConfig(
        total_training_samples=n_steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=LR,
        lr_end=LR,
        lr_scheduler_name="constant",
        device="cpu",
        dead_feature_window=1000,
        feature_sampling_window=1000,
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )


def gba_train_config(n_steps: int) -> Any:
    from gba_lens.training.train import TrainConfig

    return TrainConfig(total_samples=n_steps * BATCH, batch_size=BATCH, lr=LR)


class StepLoop:
    """A trainer driven one batch at a time, as ``fit()`` does (step, then count it)."""

    def __init__(self, trainer: Any, data: Iterator[torch.Tensor]):
        self.trainer = trainer
        self.data = data

    def __call__(self) -> None:
        self.trainer.step(next(self.data))
        self.trainer.n_training_steps += 1


def gemm_roofline(d_in: int, d_sae: int) -> Callable[[], None]:
    """The six GEMMs of one training step, with the layouts autograd uses."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, d_in, generator=g)
    w_enc = torch.randn(d_in, d_sae, generator=g)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    z = torch.randn(BATCH, d_sae, generator=g)
    grad_out = torch.randn(BATCH, d_in, generator=g)
    grad_u = torch.randn(BATCH, d_sae, generator=g)

    def run() -> None:
        torch.matmul(x, w_enc)  # u = x W_enc
        torch.matmul(z, w_dec)  # x_hat = z W_dec
        torch.matmul(z.t(), grad_out)  # dL/dW_dec
        torch.matmul(grad_out, w_dec.t())  # dL/dz
        torch.matmul(x.t(), grad_u)  # dL/dW_enc
        torch.matmul(grad_u, w_enc.t())  # dL/d(x - b_dec), for b_dec's gradient

    return run


def step_flops(d_in: int, d_sae: int) -> float:
    return 12.0 * BATCH * d_in * d_sae


# ------------------------------------------------------------------------------ measuring
@dataclass
class SizeResult:
    d_in: int
    d_sae: int
    gba: str = "defaults"
    """The GBA configuration measured, as the tables name it."""
    step_gba: Samples = field(default_factory=Samples)
    step_std: Samples = field(default_factory=Samples)
    gemm: Samples = field(default_factory=Samples)
    fit_gba: Samples = field(default_factory=Samples)
    fit_std: Samples = field(default_factory=Samples)
    observe: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)
    project: list[float] = field(default_factory=list)
    check: list[float] = field(default_factory=list)  # find_l0's co-activation check (every few steps)
    refit: Samples = field(default_factory=Samples)  # decoder_refit on the in-memory rows, on fresh copies
    refit_rows: int = 0
    settle: int = 0
    l0: float = 0.0  # the last timed step's L0
    fit_steps: int = 0
    steps: int = 0
    reps: int = 0

    @property
    def name(self) -> str:
        """The configuration as the tables name it (the settled one with its untimed steps and L0)."""
        return f"defaults, after {self.settle} steps (L0 {self.l0:.1f})" if self.settle else self.gba


def measure_size(d_in: int, d_sae: int, clock: Clock, plan: Plan, label: str = "defaults", early: bool = False,
                 **gba_options: Any) -> SizeResult:
    from sae_lens import SAETrainer

    from gba_lens.training.data import TensorBatches
    from gba_lens.training.train import train_sae
    from gba_lens.training.trainer import GBATrainer

    steps, fit_steps, reps, warmup = plan.steps[d_sae], plan.fit_steps[d_sae], plan.reps, plan.warmup
    res = SizeResult(d_in, d_sae, label, fit_steps=fit_steps, steps=steps, reps=reps)
    acts = make_activations(d_in, d_sae, plan.data_batches * BATCH)

    # --- raw step loops + GEMM roofline, interleaved step by step ---------------------------
    gba = build_gba(d_in, d_sae, **gba_options)
    std = build_standard(d_in, d_sae)
    gba_trainer = GBATrainer(cfg=saelens_trainer_config(10**6), sae=gba,
                             data_provider=TensorBatches(acts, BATCH, seed=1))
    std_trainer = SAETrainer(cfg=saelens_trainer_config(10**6), sae=std,
                             data_provider=TensorBatches(acts, BATCH, seed=1))
    # firing_worth measures in the last 30% of a run, idle_groups (until it decides) in the first 40%:
    # timed as in the one (horizon 0: firing_worth measures from the first step, idle_groups is over) or the
    # other (--early: the start of a long run, where idle_groups measures and firing_worth waits)
    if gba.bias_adaptation.firing_worth is not None or gba.bias_adaptation.idle_groups is not None:
        gba.training_horizon = 10**9 if early else 0
    gba_step = StepLoop(gba_trainer, gba_trainer.data_provider)
    std_step = StepLoop(std_trainer, std_trainer.data_provider)
    gemms = gemm_roofline(d_in, d_sae)
    settle = plan.settle[d_sae] if label == SETTLED else 0
    if settle:
        log(f"[bench_training] {settle} untimed GBA steps first ...")
    for _ in range(settle):
        gba_step()
    for _ in range(warmup):
        gba_step(), std_step(), gemms()

    inst = Instrument(clock)
    # The statistics are computed in the forward pass (``batch_peak``, ``batch_fire_count``) and
    # added by ``accumulate``; ``observe`` is the controller's own path. All count as "observe".
    inst.wrap(gba, "batch_peak", "observe")
    inst.wrap(gba, "batch_fire_count", "observe")
    inst.wrap(gba.bias_adaptation, "accumulate", "observe")
    inst.wrap(gba.bias_adaptation, "observe", "observe")
    # With T = 1 the SAE applies the rule to the batch's statistics directly (``apply_rule``);
    # with T > 1 ``update`` = ``apply_rule`` + ``reset``. Wrapping those two counts either path once.
    inst.wrap(gba.bias_adaptation, "apply_rule", "update")
    inst.wrap(gba.bias_adaptation, "reset", "update")
    if gba.valley_thresholds is not None:  # its histogram is a statistic, its step an update
        inst.wrap(gba.valley_thresholds, "observe", "observe")
        inst.wrap(gba.valley_thresholds, "apply", "update")
    inst.wrap(gba, "project_weights", "project")
    if gba.bias_adaptation.coactivation is not None:  # find_l0: amortised over the steps, not a median
        inst.wrap(gba.bias_adaptation.coactivation, "observe", "check")
        inst.wrap(gba.bias_adaptation.coactivation, "ratio", "check")
    if gba.bias_adaptation.firing_worth is not None:  # firing_worth: measured at the same steps as the checks
        inst.wrap(gba.bias_adaptation.firing_worth, "observe", "check")
        inst.wrap(gba.bias_adaptation.firing_worth, "update", "check")
    if gba.bias_adaptation.idle_groups is not None:  # idle_groups: its measurements and readings, every 10 steps
        inst.wrap(gba.bias_adaptation.idle_groups, "measure", "check")
    sides: list[tuple[str, Callable[[], None], Samples]] = [
        ("gba", gba_step, res.step_gba), ("std", std_step, res.step_std), ("gemm", gemms, res.gemm)
    ]
    for i in range(steps):
        for name, fn, into in rotate(sides, i):
            timed(clock, fn, into)
            if name == "gba":
                parts = inst.take()
                res.observe.append(parts["observe"])
                res.update.append(parts["update"])
                res.project.append(parts["project"])
                res.check.append(parts.get("check", 0.0))
    inst.restore()
    assert gba_trainer.sae.bias_adaptation.n_samples.item() == 0  # update ran (T = 1) and reset
    res.settle, res.l0 = settle, float(gba.step_density) * d_sae
    if settle:  # the harness and the refit start from a new SAE: measured with the defaults' row
        return res

    # --- the harness: one whole fit() per repetition, interleaved ---------------------------
    # Without the decoder refit that ends a run at the defaults: a cost per run, not per sample, which
    # runs of a few steps would count as throughput; it is timed on its own below.
    gba_fit = build_gba(d_in, d_sae, **{**gba_options, "decoder_refit": False})
    std_fit = build_standard(d_in, d_sae)

    def fit_gba(seed: int) -> None:
        train_sae(gba_fit, TensorBatches(acts, BATCH, seed=seed), gba_train_config(fit_steps))

    def fit_std(seed: int) -> None:
        SAETrainer(cfg=saelens_trainer_config(fit_steps), sae=std_fit,
                   data_provider=TensorBatches(acts, BATCH, seed=seed)).fit()

    fit_gba(0), fit_std(0)  # warm-up (also sets GBA's input scale)
    fits = [(fit_gba, res.fit_gba), (fit_std, res.fit_std)]
    for r in range(reps):
        for fn, into in rotate(fits, r):
            timed(clock, lambda fn=fn: fn(r + 1), into)

    # --- the decoder refit that ends a run (the defaults): once per repetition, on the in-memory rows -----
    if gba.cfg.decoder_refit:
        from gba_lens.saes.decoder_refit import refit_decoder

        res.refit_rows = len(acts)
        for _ in range(max(1, reps // 9)):  # each on a copy: a refit of a refitted SAE starts at its optimum
            fresh = copy.deepcopy(gba_fit)
            timed(clock, lambda: refit_decoder(fresh, acts), res.refit)
    return res


@dataclass
class GenResult:
    label: str
    n_features: int
    d: int
    d_sae: int
    gen: Samples = field(default_factory=Samples)
    train: Samples = field(default_factory=Samples)
    e2e: Samples = field(default_factory=Samples)
    e2e_steps: int = 0


def measure_generator(label: str, n_features: int, d: int, d_sae: int, clock: Clock,
                      plan: Plan) -> GenResult:
    from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
    from gba_lens.training.data import SeededBatches, TensorBatches
    from gba_lens.training.train import train_sae
    from gba_lens.training.trainer import GBATrainer

    steps, e2e_steps, reps, warmup = plan.gen_steps[d_sae], plan.e2e_steps[d_sae], plan.reps, plan.warmup
    res = GenResult(label, n_features, d, d_sae, e2e_steps=e2e_steps)
    model = SparseMixtureModel(SparseMixtureConfig(n_features=n_features, d=d, seed=0))
    stream = SeededBatches(model.sample, BATCH, seed=0)
    acts = torch.cat([next(stream) for _ in range(plan.data_batches)])
    gba = build_gba(d, d_sae)
    trainer = GBATrainer(cfg=saelens_trainer_config(10**6), sae=gba,
                         data_provider=TensorBatches(acts, BATCH, seed=1))
    step = StepLoop(trainer, trainer.data_provider)

    def gen() -> None:
        next(stream)

    for _ in range(warmup):
        gen(), step()
    sides = [(gen, res.gen), (step, res.train)]
    for i in range(steps):
        for fn, into in rotate(sides, i):
            timed(clock, fn, into)

    gba_e2e = build_gba(d, d_sae, decoder_refit=False)  # a cost per run: timed on its own (measure_size)
    train_sae(gba_e2e, SeededBatches(model.sample, BATCH, seed=1), gba_train_config(1))  # warm-up
    for r in range(reps):
        timed(clock, lambda: train_sae(gba_e2e, SeededBatches(model.sample, BATCH, seed=r + 2),
                                       gba_train_config(e2e_steps)), res.e2e)
    return res


def gemm_peak(clock: Clock, reps: int) -> float:
    """GFLOP/s of a square 1024^3 fp32 GEMM (reference for the shaped-GEMM roofline)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    s = Samples()
    torch.matmul(a, b)
    for _ in range(reps):
        timed(clock, lambda: torch.matmul(a, b), s)
    return 2 * 1024**3 / s.median / 1e9


# ------------------------------------------------------------------------------- profiling
def profile_steps(d_in: int, d_sae: int, n_steps: int = 5) -> str:
    """torch.profiler op tables of a few GBA and standard steps (self CPU time)."""
    from sae_lens import SAETrainer
    from torch.profiler import ProfilerActivity, profile, record_function

    from gba_lens.training.data import TensorBatches
    from gba_lens.training.trainer import GBATrainer

    acts = make_activations(d_in, d_sae, 4 * BATCH)
    out = []
    for name, sae, cls in (("GBA", build_gba(d_in, d_sae), GBATrainer),
                           ("standard", build_standard(d_in, d_sae), SAETrainer)):
        trainer = cls(cfg=saelens_trainer_config(10**6), sae=sae,
                      data_provider=TensorBatches(acts, BATCH, seed=1))
        step = StepLoop(trainer, trainer.data_provider)
        step(), step()
        if name == "GBA":
            ctrl = sae.bias_adaptation
            obs, upd, proj = ctrl.observe, ctrl.update, sae.project_weights

            def observe(*a: Any, **kw: Any) -> Any:
                with record_function("gba::observe"):
                    return obs(*a, **kw)

            def update(*a: Any, **kw: Any) -> Any:
                with record_function("gba::update"):
                    return upd(*a, **kw)

            def project() -> Any:
                with record_function("gba::project_weights"):
                    return proj()

            object.__setattr__(ctrl, "observe", observe)
            object.__setattr__(ctrl, "update", update)
            object.__setattr__(sae, "project_weights", project)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n_steps):
                with record_function("train_step"):
                    step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        out.append(f"### torch.profiler: {name}, d_in {d_in}, d_sae {d_sae}, {n_steps} steps\n\n"
                   f"```\n{table}\n```\n")
    return "\n".join(out)


# -------------------------------------------------------------------------------- report
def fmt_rate(seconds: float, n: int = BATCH) -> str:
    return f"{n / seconds:,.0f}"


def report(sizes: list[SizeResult], gens: list[GenResult], peak: float, clock: Clock,
           threads: int, quick: bool) -> str:
    lines: list[str] = []
    w = lines.append
    mode = "quick (smoke test, few repetitions)" if quick else "full"
    w(f"## Training throughput: GBA vs SAELens standard SAE ({mode})\n")
    w(f"CPU `{platform.processor() or platform.machine()}`, torch {torch.__version__}, "
      f"{threads} torch thread(s), fp32, batch {BATCH}, in-memory activations (paper's sparse "
      f"mixture, n = d_sae features). Clock: {clock.name}; medians over "
      + ", ".join(dict.fromkeys(f"{r.steps} (d_sae {r.d_sae})" for r in sizes))
      + f" interleaved steps (step loop) and {sizes[0].reps} interleaved `fit()` runs per "
      f"trainer (harness). GBA: " + "; ".join(dict.fromkeys(r.gba for r in sizes))
      + ", each timed against its own standard SAE. Roofline = the step's six "
      f"fp32 GEMMs timed with `torch.matmul` in the same run (12·B·d_in·d_sae flops/step). "
      f"Ratios and shares are medians of per-repetition ratios (the two sides of a ratio run "
      f"back to back). "
      f"Square 1024³ GEMM peak in this run: {peak:.1f} GFLOP/s.\n")
    w("| d_in × d_sae | GBA | measurement | GBA samples/s | standard samples/s | GBA / standard | goal "
      "| GBA % roofline | standard % roofline | roofline samples/s (GFLOP/s) |")
    w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sizes:
        goal = GOALS.get((r.d_in, r.d_sae))
        roof = r.gemm.median
        gflops = step_flops(r.d_in, r.d_sae) / roof / 1e9
        rows = [
            ("step loop (`GBATrainer.step` vs `SAETrainer.step`)", r.step_gba.median,
             r.step_std.median, 1, paired_ratio(r.step_std.times, r.step_gba.times)),
        ]
        if r.fit_gba.times:  # not for the settled defaults (a fit() starts a new SAE)
            rows.append(("harness (`train_sae` vs `SAETrainer.fit`, "
                         f"{r.fit_steps} steps/run)", r.fit_gba.median, r.fit_std.median, r.fit_steps,
                         paired_ratio(r.fit_std.times, r.fit_gba.times)))
        for label, t_gba, t_std, n, ratio in rows:
            ok = "" if goal is None else (" ✅" if ratio >= goal else " ❌")
            w(f"| {r.d_in} × {r.d_sae} | {r.name} | {label} | {fmt_rate(t_gba, n * BATCH)} | "
              f"{fmt_rate(t_std, n * BATCH)} | {ratio:.3f}x{ok} | ≥ {goal:.2f}x | "
              f"{100 * roof * n / t_gba:.0f}% | {100 * roof * n / t_std:.0f}% | "
              f"{fmt_rate(roof)} ({gflops:.1f}) |")
    w("")
    w("Wall-clock medians (same runs; affected by other processes on the machine): "
      + "; ".join(f"{r.d_in}×{r.d_sae}, {r.name}: step GBA {fmt_rate(r.step_gba.wall_median)} "
                  f"vs standard {fmt_rate(r.step_std.wall_median)} samples/s" for r in sizes) + ".\n")

    w("### Bias adaptation share of the GBA step (measured inside the real steps)\n")
    w("`observe`: the firing statistics (and at the defaults the valleys' histograms); `update`: the "
      "rule (and the valley windows); the check: `find_l0`'s co-activation check, every few steps. "
      "Per step: the median over steps of (`observe` + `update`) / step. In total: everything, the "
      "checks included, summed over every timed step over the steps' sum (amortised); the goal "
      "applies to it. The settled defaults are timed after untimed steps from a new SAE, once its L0 has "
      "fallen (the L0 of the last timed step in brackets), where a run spends nearly all its steps.\n")
    w("| d_in × d_sae | GBA | GBA step (ms) | `observe` (ms) | `update` (ms) | checks | ms per check "
      "| per step | in total, amortised | goal | `project_weights` (ms) | projection share |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sizes:
        step = r.step_gba.median
        obs, upd, proj = (statistics.median(v) for v in (r.observe, r.update, r.project))
        share = paired_ratio([o + u for o, u in zip(r.observe, r.update)], r.step_gba.times)
        checks = sum(1 for c in r.check if c > 0)
        per_check = f"{1e3 * sum(r.check) / checks:.2f}" if checks else "—"
        total = (sum(r.observe) + sum(r.update) + sum(r.check)) / sum(r.step_gba.times)
        ok = " ✅" if total <= BA_GOAL else " ❌"
        w(f"| {r.d_in} × {r.d_sae} | {r.name} | {1e3 * step:.2f} | {1e3 * obs:.3f} | "
          f"{1e3 * upd:.3f} | {checks} | {per_check} | {100 * share:.2f}% | {100 * total:.2f}%{ok} | "
          f"≤ {100 * BA_GOAL:.0f}% | {1e3 * proj:.3f} | {100 * paired_ratio(r.project, r.step_gba.times):.2f}% |")
    w("")
    refits = [r for r in sizes if r.refit.times]
    if refits:
        from gba_lens.saes import decoder_refit as refit_module

        w("### The decoder refit that ends a run (`decoder_refit`, the defaults)\n")
        w("Once per run, after its last step, on the run's last rows (up to 262,144): here on the "
          "in-memory rows, against the GBA step's time on as many rows; the decoder and offsets' fit, then "
          f"{refit_module.REALLOCATIONS} rounds of the thresholds' reallocation, each followed by the fit again. "
          "Not in the harness above.\n")
        w("| d_in × d_sae | GBA | rows | refit (s) | steps of training as long |")
        w("|---|---|---:|---:|---:|")
        for r in refits:
            w(f"| {r.d_in} × {r.d_sae} | {r.gba} | {r.refit_rows:,} | {r.refit.median:.2f} | "
              f"{r.refit.median / r.step_gba.median:.1f} (of {r.refit_rows // BATCH}) |")
        w("")

    if not gens:
        return "\n".join(lines)
    w("### Synthetic generator vs GBA training (`SparseMixtureModel.sample` via `SeededBatches`, GBA's defaults)\n")
    w("| generator (n features, d) | GBA d_sae | generator samples/s | GBA training samples/s "
      "| generator / training | end-to-end `train_sae` on the generator, samples/s |")
    w("|---|---:|---:|---:|---:|---:|")
    for g in gens:
        ratio = paired_ratio(g.train.times, g.gen.times)
        ok = " ✅" if ratio > 1 else " ❌"
        w(f"| {g.label}: n={g.n_features}, d={g.d} | {g.d_sae} | {fmt_rate(g.gen.median)} | "
          f"{fmt_rate(g.train.median)} | {ratio:.1f}x{ok} | "
          f"{fmt_rate(g.e2e.median, g.e2e_steps * BATCH)} |")
    w("")
    w("The generator runs in the training process, between steps: end-to-end throughput is "
      "1 / (1/generator + 1/training).")
    return "\n".join(lines)


def configurations(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The GBA configurations to measure, as (the tables' name, options): both by default; a variant
    flag measures one configuration (valley thresholds and the encoder loss on the paper's targets,
    or the defaults with another ``firing_worth`` share)."""
    if args.valley_thresholds or args.encoder_regression:
        options = {**PAPER_RULE, "valley_thresholds": args.valley_thresholds,
                   "encoder_regression": args.encoder_regression}
        named = " + ".join(n for n, on in (("valley thresholds", args.valley_thresholds),
                                           (f"encoder_regression {args.encoder_regression:g}",
                                            args.encoder_regression)) if on)
        return [(f"the paper's rule + {named}", options)]
    if args.firing_worth:
        return [(f"defaults, firing_worth {args.firing_worth:g}", {"firing_worth": args.firing_worth})]
    chosen = "defaults" if args.find_l0 else args.gba
    known = {"defaults": ("defaults", {}), "settled": (SETTLED, {}),
             "paper-rule": ("the paper's rule", dict(PAPER_RULE))}
    return list(known.values()) if chosen == "all" else [known[chosen]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke-test run (< 90 s)")
    _common.add_clock_args(parser)
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler op tables of GBA and standard steps")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown output file (default: benchmarks/results_training.md for a "
                             "full run of both configurations, none otherwise)")
    parser.add_argument("--gba", choices=("all", "defaults", "settled", "paper-rule"), default="all",
                        help="GBA's configurations: its defaults (valley thresholds and find_l0) from a new SAE, "
                             "the defaults once the L0 has settled (after untimed steps), the paper's rule "
                             "(find_l0=False), or all three (default)")
    parser.add_argument("--find-l0", action="store_true",
                        help="the same as --gba defaults")
    parser.add_argument("--valley-thresholds", action="store_true",
                        help="GBA with valley thresholds on the paper's targets (step sizes only; writes no file unless --out)")
    parser.add_argument("--encoder-regression", type=float, default=0.0, metavar="WEIGHT",
                        help="GBA's paper rule with encoder_regression=WEIGHT (step sizes only; writes no file unless --out)")
    parser.add_argument("--firing-worth", type=float, default=0.0, metavar="SHARE",
                        help="GBA's defaults with firing_worth=SHARE (writes no file unless --out)")
    parser.add_argument("--early", action="store_true",
                        help="time the defaults as at a run's start, where idle_groups measures, instead of "
                             "as in its last 30%%, where firing_worth does (writes no file unless --out)")
    add_set_option(parser)
    args = parser.parse_args(argv)
    apply_set_option(parser, args)
    gba_configs = configurations(args)
    tracked = len(gba_configs) == 3 and not args.set and not args.early  # results_training.md (with the generator)
    clock = _common.configure(args.threads, args.wall)
    start = time.perf_counter()

    plan = QUICK if args.quick else FULL

    sizes = []
    for d_in, d_sae in SIZES:
        for label, options in gba_configs:
            log(f"[bench_training] d_in {d_in}, d_sae {d_sae}, GBA {label} ...")
            sizes.append(measure_size(d_in, d_sae, clock, plan, label, early=args.early, **options))
    gen_cases = [("paper toy", 128, 42, 1024), ("small", 512, 128, 512), ("large", 4096, 512, 4096)]
    gens = []
    for label, n, d, d_sae in (gen_cases if tracked else []):
        log(f"[bench_training] generator {label} (n {n}, d {d}) ...")
        gens.append(measure_generator(label, n, d, d_sae, clock, plan))
    peak = gemm_peak(clock, 5)
    md = report(sizes, gens, peak, clock, args.threads, args.quick)
    flags = [" --quick" if args.quick else "",
             f" --gba {args.gba}" if args.gba != "all" else "",
             " --find-l0" if args.find_l0 else "",
             " --valley-thresholds" if args.valley_thresholds else "",
             f" --encoder-regression {args.encoder_regression:g}" if args.encoder_regression else "",
             f" --firing-worth {args.firing_worth:g}" if args.firing_worth else "",
             " --early" if args.early else "",
             "".join(f" --set {assignment}" for assignment in args.set or []),
             f" --threads {args.threads}" if args.threads != 1 else ""]
    md += f"\n\nCommand: `python benchmarks/bench_training.py{''.join(flags)}`; " \
          f"total wall time {time.perf_counter() - start:.0f} s.\n"
    if args.profile:
        md += "\n" + "\n".join(profile_steps(d_in, d_sae) for d_in, d_sae in SIZES)
    print(md)
    out = args.out if args.out is not None else (
        Path(__file__).with_name("results_training.md") if tracked and not args.quick else None)
    if out is not None:
        out.write_text(md + "\n")
        log(f"[bench_training] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
