"""Seekable mini-batch streams for the trainer: a resumed run sees the same batches.

Language-model activations go through SAELens's ``ActivationsStore`` (see
:mod:`gba_lens.training.lm.runner`); these streams cover what it does not: synthetic generators
and activations held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float

__all__ = ["SeededBatches", "SeekableBatches", "TensorBatches", "can_seek"]


@runtime_checkable
class SeekableBatches(Protocol):
    """A data provider that can restart at a given batch index (for exact resumes)."""

    def seek(self, batch_index: int) -> None: ...


def can_seek(stream: object) -> bool:
    """Whether ``stream`` restarts at a batch index: it has ``seek``, and a wrapper whose ``seek`` moves
    only an inner stream that can (data parallel's shards) says whether it does (``can_seek``)."""
    return isinstance(stream, SeekableBatches) and bool(getattr(stream, "can_seek", True))


class SeededBatches(Iterator[torch.Tensor]):
    """Batch i is ``sample_fn(batch_size)`` under a generator-independent seed (seed, i).

    Works with any sampler that draws from torch's global RNG (SAELens's ``SyntheticModel``,
    the paper's ``SparseMixtureModel``): the global RNG state is saved and restored around each
    batch, so nothing else is disturbed, and ``seek(i)`` makes the stream restart at batch i.

    ``cache``: an optional list of this stream's batches, for several runs on the same stream (the
    same sampler, batch size and seed: the caller's responsibility). Batch i is read from
    ``cache[i]`` when present and appended when drawn in order, so the later runs skip the
    sampling. Training never writes to its input batch; the runs see the batches a fresh stream
    would give.
    """

    def __init__(self, sample_fn: Callable[[int], torch.Tensor], batch_size: int, seed: int = 0,
                 cache: list[torch.Tensor] | None = None):
        self.sample_fn = sample_fn
        self.batch_size = batch_size
        self.seed = seed
        self.index = 0
        self.cache = cache

    def seek(self, batch_index: int) -> None:
        self.index = batch_index

    def __iter__(self) -> SeededBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self.cache is not None and self.index < len(self.cache):
            self.index += 1
            return self.cache[self.index - 1]
        # Seed the default generators directly: torch.manual_seed also queues CUDA seeding with a
        # captured stack trace on every call, which cost more than a small training step.
        seed = (self.seed * 1_000_003 + self.index) % (2**63 - 1)
        generators = [torch.default_generator]
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            generators.append(torch.cuda.default_generators[torch.cuda.current_device()])
        saved = [g.get_state() for g in generators]
        try:
            for g in generators:
                g.manual_seed(seed)
            batch = self.sample_fn(self.batch_size)
        finally:
            for g, state in zip(generators, saved):
                g.set_state(state)
        if self.cache is not None and self.index == len(self.cache):
            self.cache.append(batch)
        self.index += 1
        return batch


class TensorBatches(Iterator[torch.Tensor]):
    """Shuffled mini-batches of an activation tensor, epoch after epoch (seekable)."""

    def __init__(self, activations: Float[torch.Tensor, "n d_in"], batch_size: int, seed: int = 0):
        if activations.ndim != 2:
            raise ValueError(f"activations must be [n, d_in], got shape {tuple(activations.shape)}")
        if activations.shape[0] == 0:
            raise ValueError("no activations: the activation tensor is empty")
        if batch_size > activations.shape[0]:
            raise ValueError(f"batch_size {batch_size} exceeds the {activations.shape[0]} activations available")
        self.activations = activations
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = activations.shape[0] // batch_size
        self.index = 0
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def seek(self, batch_index: int) -> None:
        self.index = batch_index

    def __iter__(self) -> TensorBatches:
        return self

    def __next__(self) -> torch.Tensor:
        epoch, within = divmod(self.index, self.batches_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm = torch.randperm(self.activations.shape[0], generator=g)
            self._epoch = epoch
        rows = self._perm[within * self.batch_size : (within + 1) * self.batch_size]
        self.index += 1
        return self.activations[rows]
