"""The job runner: many independent training runs, in this process or in a pool of processes.

A :class:`Job` describes one run by picklable parts, so that a worker process can rebuild the data
model and train. Two pieces of per-process state exist, both explicit and confined here:

* :class:`StreamCache`: the sample streams kept between jobs. :func:`run_jobs` makes one for an
  in-process run and drops it when the jobs are done; each worker process makes its own in
  :func:`_worker_init`, and it goes with the process when the pool closes.
* SAELens's training bar: :func:`_silence_saelens_training_bar`, applied only inside worker
  processes (never in the caller's process).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from gba_lens.experiments.runs import MethodSpec, RunRecord, train_and_evaluate
from gba_lens.training.train import TrainConfig

StreamKey = tuple[Any, ...]

STREAMS_KEPT = 2
"""Streams a :class:`StreamCache` keeps. The methods of one seed train one after another on the
same stream, and with two workers the seed-major job order has at most two streams in flight per
process; more would only hold memory (a stream of the paper toy's size is hundreds of MB)."""


@dataclass
class Job:
    """One training run, described by picklable parts so that a worker process can run it."""

    spec: MethodSpec
    model_factory: Callable[..., Any]  # a module-level callable: model = model_factory(*model_args)
    model_args: tuple[Any, ...]
    width: int
    train: TrainConfig
    seed: int
    eval_samples: int = 20_000
    consistency_samples: int = 0
    share_stream: bool = False
    """Keep this job's sample stream in the process for the next job on the same stream (set by
    :func:`run_jobs` when several jobs share one)."""

    def stream_key(self) -> StreamKey:
        """Jobs with equal keys train on the same batches (same model, seed and batch size)."""
        factory = f"{self.model_factory.__module__}.{self.model_factory.__qualname__}"
        return factory, repr(self.model_args), self.seed, self.train.batch_size, self.train.device


class StreamCache:
    """The sample streams kept in one process, most recently used last.

    The methods of one seed train on the same stream; handing the later runs the batches the first
    one drew spares them the sampling. A stream is a list that
    :class:`~gba_lens.training.data.SeededBatches` fills as it draws; sharing it changes no number.
    """

    def __init__(self, kept: int = STREAMS_KEPT) -> None:
        self.kept = kept
        self._streams: OrderedDict[StreamKey, list[torch.Tensor]] = OrderedDict()

    def get(self, key: StreamKey) -> list[torch.Tensor]:
        """The stream for ``key`` (empty if new); the oldest streams beyond ``kept`` are dropped."""
        stream = self._streams.setdefault(key, [])
        self._streams.move_to_end(key)
        while len(self._streams) > self.kept:
            self._streams.popitem(last=False)
        return stream

    def clear(self) -> None:
        self._streams.clear()

    def __len__(self) -> int:
        return len(self._streams)


def run_job(job: Job, streams: StreamCache | None = None) -> RunRecord:
    """Run one job in this process; with ``streams``, a shared stream is taken from (and left in) it."""
    model = job.model_factory(*job.model_args)
    cache = streams.get(job.stream_key()) if streams is not None and job.share_stream else None
    return train_and_evaluate(job.spec, model, job.width, job.train, job.seed, job.eval_samples,
                              job.consistency_samples, stream_cache=cache)


# -------------------------------------------------------------------------- worker processes
_worker_streams: StreamCache | None = None
"""The stream cache of a worker process (set by :func:`_worker_init`; unused in the caller)."""


def _silence_saelens_training_bar() -> None:
    """Give SAELens's trainer module a disabled tqdm, in a worker process only.

    The caller draws one bar over the jobs. SAELens's ``SAETrainer.fit`` always draws its own
    "Training SAE" bar, which from several workers interleaves on the caller's terminal; ``fit``
    has no switch for it, so the module's ``tqdm`` name is replaced. This patches SAELens's module
    globals and is therefore done only in worker processes, which end with the pool.
    """
    from gba_lens.compat import sae_trainer_module as sae_trainer

    sae_trainer.tqdm = functools.partial(sae_trainer.tqdm, disable=True)


def _worker_init(threads: int) -> None:
    import warnings

    global _worker_streams
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    _silence_saelens_training_bar()
    _worker_streams = StreamCache()


def _run_job_in_worker(job: Job) -> RunRecord:
    record = run_job(job, _worker_streams)
    record.sae = None  # the SAE stays in the worker; directions/frequencies travel back
    return record


def default_workers(n_jobs: int, device: str = "cpu") -> int:
    """One process per core on CPU (each with one torch thread); 1 on an accelerator."""
    if device != "cpu":
        return 1
    return max(1, min(n_jobs, os.cpu_count() or 1))


def run_jobs(jobs: Sequence[Job], workers: int | None = None, desc: str = "runs",
             progress: bool = True, start_method: str | None = None) -> list[RunRecord]:
    """Run ``jobs`` (in order of the result) in this process or in ``workers`` processes; a pool starts the
    jobs of the costliest methods first (:attr:`MethodSpec.cost`).

    Small synthetic SAEs use a multi-core CPU badly from one process (their matrix products are
    thin), so one single-threaded process per core is faster than one process with as many
    threads. Every job seeds itself, so the numbers do not depend on ``workers`` beyond
    floating-point summation order. Jobs on the same stream (the methods of one seed) share its
    batches within a process (:attr:`Job.share_stream`), which changes no number.

    ``start_method`` (None = auto): ``fork`` when each worker runs one torch thread on CPU, which
    spares every worker the import of SAELens / TransformerLens; ``spawn`` otherwise, because a
    forked child that opens an OpenMP parallel region after the parent already has (several torch
    threads) can hang, and CUDA cannot be forked.
    """
    keys = [job.stream_key() for job in jobs]
    shared = Counter(keys)
    jobs = [replace(job, share_stream=shared[key] > 1) for job, key in zip(jobs, keys)]
    device = jobs[0].train.device if jobs else "cpu"
    workers = default_workers(len(jobs), device) if workers is None else workers
    if workers <= 1 or len(jobs) <= 1:
        streams = StreamCache()
        try:
            return [run_job(job, streams) for job in tqdm(jobs, desc=desc, disable=not progress)]
        finally:
            streams.clear()
    threads = max(1, (os.cpu_count() or 1) // workers)
    if start_method is None:
        forkable = "fork" in multiprocessing.get_all_start_methods()
        start_method = "fork" if threads == 1 and device == "cpu" and forkable else "spawn"
    context = multiprocessing.get_context(start_method)
    records: list[RunRecord | None] = [None] * len(jobs)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        costliest_first = sorted(range(len(jobs)), key=lambda i: -jobs[i].spec.cost)  # stable: else in order
        futures = {pool.submit(_run_job_in_worker, jobs[i]): i for i in costliest_first}
        for future in tqdm(as_completed(futures), total=len(jobs), desc=f"{desc} ({workers} processes)",
                           disable=not progress):
            records[futures[future]] = future.result()
    return [r for r in records if r is not None]
