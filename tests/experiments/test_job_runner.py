"""The job runner: worker processes reproduce in-process numbers, and shared sample streams
change no number."""

import dataclasses
import functools
from concurrent.futures import Future

import pytest
import torch

from gba_lens.experiments import runner
from gba_lens.experiments.paper_toy import PaperToySetup, run_paper_toy
from gba_lens.experiments.runner import Job, StreamCache, run_job, run_jobs
from gba_lens.experiments.runs import MethodSpec, RunRecord
from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
from gba_lens.training.data import SeededBatches
from gba_lens.training.train import TrainConfig


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_give_the_same_numbers_as_one_process(start_method, monkeypatch, capfd):
    """Jobs seed themselves: two single-threaded worker processes reproduce an in-process run,
    whether the workers are forked (the default with one thread each) or spawned. The workers
    draw no training bars of their own (the parent's bar counts the jobs)."""
    monkeypatch.setattr(runner, "run_jobs", functools.partial(run_jobs, start_method=start_method))

    setup = PaperToySetup(width=48, samples=4096, batch_size=256, seeds=(0, 1), eval_samples=2000)
    methods = [MethodSpec("GBA", "gba", {}), MethodSpec("TopK K=5", "topk", {"k": 5})]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each worker uses
    try:
        rows_here, records_here = run_paper_toy(setup, methods, progress=False, workers=1)
    finally:
        torch.set_num_threads(threads)
    assert "Training SAE" in capfd.readouterr().err  # SAELens's bar, in this process
    rows_pool, records_pool = run_paper_toy(setup, methods, progress=False, workers=2)
    assert "Training SAE" not in capfd.readouterr().err
    assert [(r.label, r.seed) for r in records_here] == [(r.label, r.seed) for r in records_pool]
    for a, b in zip(records_here, records_pool):
        assert a.result == b.result
        assert torch.equal(a.directions, b.directions) and torch.equal(a.frequencies, b.frequencies)
        assert b.sae is None  # the SAE stays in the worker
    assert rows_here == [dataclasses.replace(r, seconds=h.seconds) for r, h in zip(rows_pool, rows_here)]
    # The equality above would also hold if neither side had computed consistency (it needs every
    # seed's directions back from the workers): the pooled rows do carry it.
    assert 1.0 in rows_pool[0].consistency and "consistency_1" in rows_pool[0].as_row()


def test_a_pool_starts_the_costliest_runs_first_and_returns_the_records_in_job_order(monkeypatch):
    submitted = []

    class Recording:  # a pool that runs each job as it is submitted, in this process
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, job):
            submitted.append((job.spec.label, job.seed))
            future = Future()
            future.set_result(fn(job))
            return future

    monkeypatch.setattr(runner, "ProcessPoolExecutor", Recording)
    monkeypatch.setattr(runner, "_run_job_in_worker", lambda job: RunRecord(job.spec.label, job.seed, None, 0.0))
    specs = [MethodSpec("cheap", "topk"), MethodSpec("costly", "gba", cost=6.0), MethodSpec("cheap too", "topk")]
    train = TrainConfig(total_samples=256, batch_size=256)
    jobs = [Job(spec, SparseMixtureModel, (), 8, train, seed) for seed in (0, 1) for spec in specs]
    records = run_jobs(jobs, workers=2, progress=False)
    assert submitted == [("costly", 0), ("costly", 1), ("cheap", 0), ("cheap too", 0), ("cheap", 1), ("cheap too", 1)]
    assert [(r.label, r.seed) for r in records] == [(job.spec.label, job.seed) for job in jobs]


def test_a_cached_stream_gives_the_batches_of_a_fresh_one():
    calls = []

    def sample(n):
        calls.append(n)
        return torch.randn(n, 6)

    fresh = SeededBatches(sample, 32, seed=4)
    expected = [next(fresh) for _ in range(5)]
    cache: list[torch.Tensor] = []
    first = SeededBatches(sample, 32, seed=4, cache=cache)
    assert all(torch.equal(next(first), e) for e in expected[:3]) and len(cache) == 3
    first.seek(4)  # out of order: drawn, not stored
    assert torch.equal(next(first), expected[4]) and len(cache) == 3
    calls.clear()
    second = SeededBatches(sample, 32, seed=4, cache=cache)
    got = [next(second) for _ in range(5)]
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    assert calls == [32, 32] and len(cache) == 5  # only batches 3 and 4 were sampled


def test_methods_sharing_a_stream_get_the_numbers_of_fresh_streams(monkeypatch):
    """The jobs of one seed share its batches in a process; no method writes to its input batch,
    so every record equals the one from a stream of its own."""
    specs = [MethodSpec("GBA", "gba"), MethodSpec("TopK", "topk", {"k": 5}),
             MethodSpec("BatchTopK", "batchtopk", {"k": 5.0}),
             MethodSpec("L1", "l1", {"l1_coefficient": 0.3}),
             MethodSpec("JumpReLU", "jumprelu", {"l0_coefficient": 0.1})]
    train = TrainConfig(total_samples=256 * 8, batch_size=256)
    jobs = [Job(spec, SparseMixtureModel, (SparseMixtureConfig(seed=0), "cpu"), 48, train, 1, 1000)
            for spec in specs]
    handed_out: list[list[torch.Tensor]] = []
    caches: list[StreamCache] = []
    keep = StreamCache.get

    def get(self, key):
        caches.append(self)
        handed_out.append(keep(self, key))
        return handed_out[-1]

    monkeypatch.setattr(StreamCache, "get", get)
    fresh = [run_job(job) for job in jobs]
    assert not handed_out
    shared = run_jobs(jobs, workers=1, progress=False)
    assert [r.result for r in shared] == [r.result for r in fresh]
    assert len(handed_out) == 5 and all(cache is handed_out[0] for cache in handed_out)
    model = SparseMixtureModel(SparseMixtureConfig(seed=0))
    assert len(handed_out[0]) == 8
    assert all(torch.equal(b, e) for b, e in zip(handed_out[0], SeededBatches(model.sample, 256, seed=1)))
    assert all(c is caches[0] for c in caches) and len(caches[0]) == 0  # released when the jobs are done
