"""Data-parallel training under ``torchrun``: the process group, data shards and a DDP trainer.

The distributed engine is PyTorch's own (``torch.distributed`` launched by ``torchrun``,
``DistributedDataParallel`` for the gradients); SAELens has no multi-process training, so this
module adds only what GBA needs on top:

- :func:`ensure_process_group` joins the group ``torchrun`` describes in the environment (NCCL on
  GPU, gloo on CPU) with a timeout on every collective, so a rank that dies or hangs ends the run
  with an error instead of a silent hang;
- :func:`shard_batches`: rank r trains on rows ``[r*B/W, (r+1)*B/W)`` of global batch i, so no two
  ranks see the same rows, the ranks together see exactly the batches a single process would, and
  ``seek`` (resuming) keeps working on the global batch index;
- :class:`DistributedGBATrainer`: ``GBATrainer`` with the SAE's training forward pass under DDP, the
  GBA controller's per-batch statistics all-reduced (sum counts, max peaks) before they reach the
  controller, b_pre and the input scale estimated from the global first batch, a check on logging
  steps that parameters and biases are identical on every rank, and rank 0 alone writing
  checkpoints. Its ``cfg`` is the global one (batch size, total samples): a run on W processes
  trains the same SAE as a run on one, and its checkpoints resume on any number of processes.

The controller statistics are reduced every step rather than once per bias update: they are
``2 * d_sae + 1`` numbers against the ``2 * d_in * d_sae`` gradients (with valley thresholds
``(BINS + 1) * d_sae`` more, the batch's histogram counts), and keeping them identical on every
rank makes a checkpoint written by rank 0 mid-window exact for all ranks.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gba_lens.data.batches import TensorBatches, can_seek
from gba_lens.saes.gba import GBATrainingSAE
from gba_lens.training.trainer import GBATrainer

__all__ = [
    "DistributedGBATrainer",
    "RankDivergenceError",
    "all_reduce",
    "ensure_process_group",
    "fitting_on_ranks",
    "is_distributed",
    "is_main_process",
    "rank",
    "rank_device",
    "report_rank_failure",
    "shard_batches",
    "world_size",
]

TIMEOUT_ENV = "GBA_LENS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


class RankDivergenceError(RuntimeError):
    """The SAE's parameters differ between ranks (they must stay identical)."""


# ------------------------------------------------------------------------------ process group
def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True when this process is one of several ranks (launched by torchrun, or a group is up)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return launched_world_size() > 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return launched_world_size()


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that logs, draws progress and writes files."""
    return rank() == 0


def collective_timeout() -> timedelta:
    """The timeout of every collective: ``$GBA_LENS_DIST_TIMEOUT`` seconds (default 600)."""
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return timedelta(seconds=seconds)


def ensure_process_group() -> None:
    """Join torchrun's process group if this is a multi-process launch and none is up yet.

    NCCL when CUDA is available (each rank on ``cuda:LOCAL_RANK``), gloo otherwise. The group is
    destroyed at exit.
    """
    if dist.is_initialized() or launched_world_size() <= 1:
        return
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE is set but {var} is not: launch with torchrun")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    timeout = collective_timeout()
    try:
        dist.init_process_group(backend=backend, timeout=timeout)
    except Exception as exc:
        print(f"gba-lens: rank {os.environ['RANK']} of {launched_world_size()} could not join the process "
              f"group within {timeout.total_seconds():g} s ({TIMEOUT_ENV}): {type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr, flush=True)
        raise
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str) -> str:
    """``cuda`` on a multi-GPU launch names this rank's GPU (``cuda:LOCAL_RANK``)."""
    if device == "cuda" and is_distributed():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def all_reduce(tensor: torch.Tensor, op: str) -> None:
    """In-place all-reduce with ``op`` in {"sum", "max", "min"} (the signature of
    :meth:`~gba_lens.saes.bias_adaptation.GroupBiasAdaptation.reduce_statistics`)."""
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(tensor, ops[op])


_PEER_FAILURE = ("Connection reset by peer", "Connection closed by peer", "Timed out", "timed out",
                 "NCCL", "gloo")


def on_main_then_share(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 alone and give its result to every rank.

    For decisions that touch the file system (checking and preparing a run directory): rank 0
    makes them once and the other ranks follow. An error on rank 0 is raised on every rank, with
    rank 0's message, so no rank waits for a peer that has already stopped.
    """
    outcome: list[Any] = [None]
    if is_main_process():
        try:
            outcome[0] = ("ok", fn())
        except Exception as exc:
            outcome[0] = ("error", exc)
    dist.broadcast_object_list(outcome, src=0)
    status, value = outcome[0]
    if status == "error":
        raise value
    return value


def report_rank_failure(exc: BaseException, step: int) -> None:
    """One line on stderr naming this rank, the step and the error (before it propagates).

    A failed collective is reported as such: it usually means another rank died or hung first.
    """
    text = str(exc).splitlines()[0] if str(exc) else ""
    is_collective = isinstance(exc, dist.DistError) or any(s in text for s in _PEER_FAILURE)
    what = "stopped: a collective failed (another rank died or hung)" if is_collective else "failed"
    print(
        f"gba-lens: rank {rank()} of {world_size()} {what} at step {step}: {type(exc).__name__}: {text}",
        file=sys.stderr,
        flush=True,
    )


# --------------------------------------------------------------------------------- data shards
def shard_batches(data: Iterator[torch.Tensor], rank: int, world: int, global_batch: int) -> Iterator[torch.Tensor]:
    """This rank's rows of each global batch of ``data`` (see the module docstring).

    ``TensorBatches`` streams are indexed directly (only this rank's rows are gathered); any other
    stream yields global batches that are sliced here. A stream that already yields this rank's
    rows can be wrapped in :class:`PreSharded` to pass through unchanged.
    """
    if global_batch % world:
        raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes ({world})")
    if isinstance(data, PreSharded):
        return data
    if type(data) is TensorBatches:  # not a subclass: it may override __next__
        return ShardedTensorBatches(data, rank, world)
    return ShardedBatches(data, rank, world)


class PreSharded(Iterator[torch.Tensor]):
    """Marks a stream that already yields this rank's rows (``shard_batches`` leaves it alone)."""

    def __init__(self, inner: Iterator[torch.Tensor]):
        self.inner, self.can_seek = inner, can_seek(inner)

    def seek(self, batch_index: int) -> None:
        self.inner.seek(batch_index)  # type: ignore[attr-defined]

    def __iter__(self) -> PreSharded:
        return self

    def __next__(self) -> torch.Tensor:
        return next(self.inner)


class ShardedBatches(Iterator[torch.Tensor]):
    """Rows ``[r*b, (r+1)*b)`` of each global batch of ``inner`` (b = batch / world)."""

    def __init__(self, inner: Iterator[torch.Tensor], rank: int, world: int):
        self.inner, self.rank, self.world, self.can_seek = inner, rank, world, can_seek(inner)

    def seek(self, batch_index: int) -> None:
        if hasattr(self.inner, "seek"):  # as for one process: a stream without seek is not moved
            self.inner.seek(batch_index)

    def __iter__(self) -> ShardedBatches:
        return self

    def __next__(self) -> torch.Tensor:
        batch = next(self.inner)
        if batch.shape[0] % self.world:
            raise ValueError(f"a global batch of {batch.shape[0]} rows cannot be split over {self.world} ranks")
        size = batch.shape[0] // self.world
        return batch[self.rank * size : (self.rank + 1) * size]


class ShardedTensorBatches(ShardedBatches):
    """``ShardedBatches`` of a ``TensorBatches`` that gathers only this rank's rows."""

    def __next__(self) -> torch.Tensor:
        src = self.inner
        epoch, within = divmod(src.index, src.batches_per_epoch)  # type: ignore[attr-defined]
        if epoch != src._epoch:  # type: ignore[attr-defined]
            g = torch.Generator().manual_seed(src.seed * 7919 + epoch)  # type: ignore[attr-defined]
            src._perm = torch.randperm(src.activations.shape[0], generator=g)  # type: ignore[attr-defined]
            src._epoch = epoch  # type: ignore[attr-defined]
        size = src.batch_size // self.world  # type: ignore[attr-defined]
        start = within * src.batch_size + self.rank * size  # type: ignore[attr-defined]
        src.index += 1  # type: ignore[attr-defined]
        return src.activations[src._perm[start : start + size]]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- the trainer
class _TrainingForward(nn.Module):
    """Makes ``sae.training_forward_pass`` the ``forward`` DDP wraps (SAELens's trainer calls
    ``training_forward_pass``, not ``forward``, and DDP syncs gradients only through ``forward``)."""

    def __init__(self, sae: nn.Module):
        super().__init__()
        self.sae = sae

    def forward(self, step_input: Any) -> Any:
        return type(self.sae).training_forward_pass(self.sae, step_input)


@contextmanager
def data_parallel(sae: nn.Module, device: torch.device) -> Iterator[None]:
    """While open, ``sae``'s training forward runs under DDP (gradients averaged over ranks) and,
    for a GBA SAE, the controller statistics and the first-batch estimates are global."""
    # Buffers (input scale, controller statistics) are kept identical by the reductions below:
    # no per-forward buffer broadcast (the keyword was renamed in torch 2.13).
    no_buffer_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    ddp = DistributedDataParallel(
        _TrainingForward(sae),
        device_ids=[torch.cuda.current_device() if device.index is None else device.index]
        if device.type == "cuda"
        else None,
        **no_buffer_sync,
    )
    patched: dict[str, Callable[..., Any]] = {"training_forward_pass": lambda step_input: ddp(step_input)}
    if isinstance(sae, GBATrainingSAE):
        patched.update(_gba_patches(sae))
    for name, fn in patched.items():
        object.__setattr__(sae, name, fn)
    try:
        yield
    finally:
        for name in patched:
            object.__delattr__(sae, name)


def _gba_patches(sae: GBATrainingSAE) -> dict[str, Callable[..., Any]]:
    cls = type(sae)
    world = dist.get_world_size()

    @torch.no_grad()
    def combine_batch_statistics(fire_count: torch.Tensor, peak: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        fire_count, peak = fire_count.clone(), peak.clone()
        all_reduce(fire_count, "sum")
        all_reduce(peak, "max")
        return fire_count, peak, n * world  # every rank holds the same number of rows

    @torch.no_grad()
    def initialize_from_batch(batch: torch.Tensor) -> None:
        local = batch.detach().reshape(-1, sae.cfg.d_in).contiguous()
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        cls.initialize_from_batch(sae, torch.cat(gathered))  # rank order = the global batch's rows

    return {"combine_batch_statistics": combine_batch_statistics, "initialize_from_batch": initialize_from_batch,
            "combine_batch_histogram": lambda counts: all_reduce(counts, "sum"),
            "reduce_window_statistics": lambda statistics: statistics.reduce_statistics(all_reduce)}


@contextmanager
def _progress_on_rank_0_only(*modules: Any) -> Iterator[None]:
    """SAELens's trainers draw their bars with their module's ``tqdm`` (``modules``; default the
    single-SAE trainer's); other ranks get a disabled one (tqdm reads ``TQDM_DISABLE`` only when
    imported, too early to set it per rank)."""
    from gba_lens.compat import sae_trainer_module

    if dist.get_rank() == 0:
        yield
        return
    modules = modules or (sae_trainer_module,)
    originals = [module.tqdm for module in modules]
    for module, original in zip(modules, originals):
        module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            module.tqdm = original


@contextmanager
def fitting_on_ranks(saes: list[nn.Module], device: torch.device, step: Callable[[], int],
                     *progress_modules: Any) -> Iterator[None]:
    """Around one rank's ``fit()``: every SAE's training forward under DDP (:func:`data_parallel`),
    progress bars on rank 0 only, a failure reported with this rank and ``step()`` before it
    propagates, and a barrier at the end (rank 0's final checkpoint is on disk before any rank
    returns)."""
    with contextlib.ExitStack() as stack:
        for sae in saes:
            sae.to(device)
            stack.enter_context(data_parallel(sae, device))
        stack.enter_context(_progress_on_rank_0_only(*progress_modules))
        try:
            yield
        except BaseException as exc:
            report_rank_failure(exc, step())
            raise
    dist.barrier()


class DistributedGBATrainer(GBATrainer):
    """:class:`GBATrainer` for one rank of a data-parallel run (see the module docstring).

    ``cfg`` holds the global batch size and sample count; each rank's ``data_provider`` yields its
    ``batch / world`` rows (:func:`shard_batches`). ``n_training_samples`` counts global samples, so
    step numbers, schedules and checkpoints are those of a single-process run.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._mid_step = False
        if self.rank != 0:
            self.cfg.logger.log_to_wandb = False

    def fit(self) -> Any:
        with fitting_on_ranks([self.sae], torch.device(self.cfg.device), lambda: self.n_training_steps):
            return super().fit()

    def step(self, batch: torch.Tensor) -> Any:
        local = batch.shape[0]
        if local * self.world != self.cfg.train_batch_size_samples:
            raise ValueError(
                f"rank {self.rank} got a batch of {local} rows; expected "
                f"{self.cfg.train_batch_size_samples} / {self.world} processes"
            )
        self._mid_step = True
        output = super().step(batch)
        self._mid_step = False
        # SAELens counted this rank's rows; the run's counters are global (so are checkpoints).
        self.n_training_samples += local * (self.world - 1)
        self.n_frac_active_samples -= self.cfg.train_batch_size_samples - local  # local firing counts
        if (self.n_training_steps + 1) % self.cfg.logger.wandb_log_frequency == 0:
            self.check_ranks_agree()
        return output

    @torch.no_grad()
    def check_ranks_agree(self) -> None:
        """Raise :class:`RankDivergenceError` unless every parameter (weights and the GBA biases)
        is bitwise identical on all ranks (one max and one min all-reduce per tensor)."""
        for name, param in self.sae.named_parameters():
            hi, lo = param.detach().clone(), param.detach().clone()
            all_reduce(hi, "max")
            all_reduce(lo, "min")
            if not torch.equal(hi, lo):
                gap = (hi - lo).abs().max().item()
                raise RankDivergenceError(
                    f"{name} differs between ranks by up to {gap:.3g} at step {self.n_training_steps}"
                )

    @torch.no_grad()
    def set_final_sae_metadata(self) -> None:
        # Firing counts are per rank during training; the SAE's final metadata is global.
        all_reduce(self.act_freq_scores, "sum")
        all_reduce(self.n_forward_passes_since_fired, "min")
        total = torch.tensor(float(self.n_frac_active_samples), device=self.act_freq_scores.device)
        all_reduce(total, "sum")
        self.n_frac_active_samples = int(total.item())
        super().set_final_sae_metadata()

    def save_checkpoint(self, checkpoint_name: str, *args: Any, **kwargs: Any) -> None:
        if self._mid_step:
            # An interrupt (SIGTERM from torchrun when another rank failed) inside a step: the
            # counters already count the step, the weights may not; the newest periodic
            # checkpoint stays the resume point.
            warnings.warn("interrupted inside a training step: no checkpoint written", stacklevel=2)
            return
        if self.rank == 0:
            super().save_checkpoint(checkpoint_name, *args, **kwargs)

    def _prune_checkpoints(self) -> None:
        if self.rank == 0:
            super()._prune_checkpoints()

