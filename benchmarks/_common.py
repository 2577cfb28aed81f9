"""What every benchmark shares: the offline environment and the timer.

Each ``bench_*.py`` (and ``run_all.py``) starts with::

    import _common
    _common.setup_environment()   # before torch / gba_lens are imported

and times with :class:`Clock` / :func:`timed` / :func:`time_pair`, so that every benchmark
measures the same way:

* **offline**: no Hugging Face hub, no W&B (benchmarks never log), ``OMP_WAIT_POLICY=PASSIVE``
  (spinning OpenMP threads wreck timings on a shared machine). Values already in the
  environment win (``setdefault``), so ``WANDB_MODE=offline python benchmarks/...`` still works.
* **clock**: with one torch thread, this process's CPU time (on a shared machine, wall time mostly
  measures the time spent descheduled); with several threads, or ``--wall``, wall time (CPU time
  would add the threads up).
* **interleaving**: the sides being compared run alternately (A B, then B A, ...; or rotated for
  more sides), so load from other processes hits them alike; a ratio is the median of
  per-repetition ratios of sides timed back to back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: The environment every benchmark runs in (``run_all.py`` passes it to each subprocess too).
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "WANDB_SILENT": "true",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def setup_environment(**extra: str) -> None:
    """Set :data:`OFFLINE_ENV` (and ``extra``) where not already set. Call before importing torch."""
    for key, value in {**OFFLINE_ENV, **extra}.items():
        os.environ.setdefault(key, value)


def log(msg: str) -> None:
    """Progress to stderr (stdout carries only the markdown tables)."""
    print(msg, file=sys.stderr, flush=True)


def add_clock_args(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--wall``, the options every benchmark takes."""
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--wall", action="store_true", help="time wall clock, not CPU time")


@dataclass
class Clock:
    """The timing clock: CPU time of this process (``cpu=True``) or wall time."""

    cpu: bool

    @classmethod
    def for_threads(cls, threads: int, wall: bool = False) -> Clock:
        """CPU time for one thread unless ``wall``; wall time for several threads."""
        return cls(cpu=threads == 1 and not wall)

    @property
    def name(self) -> str:
        return "CPU time" if self.cpu else "wall time"

    def __call__(self) -> float:
        return time.process_time() if self.cpu else time.perf_counter()


def configure(threads: int, wall: bool = False) -> Clock:
    """Set torch's thread count and return the matching :class:`Clock`."""
    import torch

    torch.set_num_threads(threads)
    return Clock.for_threads(threads, wall)


@dataclass
class Samples:
    """Timings of one measured thing (seconds), on the primary clock and on the wall clock."""

    times: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def add(self, t: float, w: float) -> None:
        self.times.append(t)
        self.wall.append(w)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)


class Instrument:
    """Wraps bound methods of an object with timers (instance attributes shadow the methods); the
    time of each label adds up until :meth:`take`. ``sync`` (e.g. ``torch.cuda.synchronize``) runs
    before each clock reading."""

    def __init__(self, clock: Clock, sync: Callable[[], None] | None = None):
        self.clock = clock
        self.sync = sync or (lambda: None)
        self.acc: dict[str, float] = {}
        self._patched: list[tuple[Any, str]] = []

    def wrap(self, obj: Any, name: str, label: str) -> None:
        original = getattr(obj, name)
        self.acc[label] = 0.0

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            t0 = self.clock()
            out = original(*args, **kwargs)
            self.sync()
            self.acc[label] += self.clock() - t0
            return out

        object.__setattr__(obj, name, wrapper)
        self._patched.append((obj, name))

    def take(self) -> dict[str, float]:
        out = dict(self.acc)
        for k in self.acc:
            self.acc[k] = 0.0
        return out

    def restore(self) -> None:
        for obj, name in self._patched:
            del obj.__dict__[name]
        self._patched.clear()


def timed(clock: Clock, fn: Callable[[], T], into: Samples) -> T:
    """Run ``fn`` once, adding its time on ``clock`` (and on the wall clock) to ``into``."""
    t0, w0 = clock(), time.perf_counter()
    out = fn()
    into.add(clock() - t0, time.perf_counter() - w0)
    return out


def repeat(clock: Clock, fn: Callable[[], Any], reps: int, warmup: int = 1) -> Samples:
    """``warmup`` untimed calls, then ``reps`` timed ones."""
    for _ in range(warmup):
        fn()
    out = Samples()
    for _ in range(reps):
        timed(clock, fn, out)
    return out


def rotate(items: Sequence[T], i: int) -> list[T]:
    """A different order each repetition, so no side always runs right after the same one."""
    k = i % len(items)
    return list(items[k:]) + list(items[:k])


def time_interleaved(clock: Clock, fns: Sequence[Callable[[], Any]], reps: int, warmup: int = 2) -> list[Samples]:
    """Times of each of ``fns``, run in turn, in another order each repetition (A B C, B C A, ...) to share
    the drift."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples = [Samples() for _ in fns]
    for i in range(reps):
        for fn, into in rotate(list(zip(fns, samples, strict=True)), i):
            timed(clock, fn, into)
    return samples


def time_pair(clock: Clock, fn_a: Callable[[], Any], fn_b: Callable[[], Any], reps: int,
              warmup: int = 2) -> tuple[Samples, Samples]:
    """Times of ``fn_a`` and ``fn_b``, run alternately (A B, B A, ...) to share the drift."""
    a, b = time_interleaved(clock, (fn_a, fn_b), reps, warmup)
    return a, b


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of num[i] / den[i]: pairs timed back to back share the machine's load at that
    moment, so their ratio is steadier than the ratio of the two medians."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))
