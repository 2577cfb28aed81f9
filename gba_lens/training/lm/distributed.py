"""``gba-lens train`` under torchrun: data parallel, or (``--distribute-hooks``) one SAE per rank.

Each rank runs the model on its shard of the training token stream (Hugging Face's
``split_dataset_by_node``: no two ranks see the same rows) through its own SAELens
``ActivationsStore`` of ``batch_tokens / W`` activations per step, so activation memory per rank is
one store buffer, never the dataset. The SAE is trained by
:class:`~gba_lens.training.distributed.DistributedGBATrainer` (DDP, GBA statistics all-reduced,
rank 0 alone logging and writing checkpoints); rank 0 then saves, evaluates and reports alone.

Several hooks / widths from one model pass train data parallel too (SAELens's multi-SAE trainer,
each SAE stepped by a ``DistributedGBATrainer``), and so does training from an activation cache
(``--cache-dir``): each rank reads a contiguous shard of the cache's rows.

With ``--distribute-hooks`` the ranks instead split the SAEs: rank r trains SAEs r, r + N, ... of
the run (one per hook and width) on every token, as a single process would, with its own model
pass and its own checkpoints (``checkpoints/rank<r>_of_<N>``); each rank saves and evaluates its
SAEs, and rank 0 gathers the evaluations and writes the report. The model forward runs on every
rank (sparsify instead exchanges activations between ranks); for wide SAEs on a small model the
SAE steps dominate, and each SAE's weights, optimiser state and gradients live on one device only.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist

from gba_lens.training import distributed
from gba_lens.training.lm.sources import TokenSource

__all__ = ["gather_evaluations", "hook_share", "rank_checkpoint_dir", "rank_source", "rank_store_batch",
           "rank_trainer_config", "shard_cached_activations"]


def rank_source(source: TokenSource) -> TokenSource:
    """This rank's shard of the training tokens."""
    from datasets import load_dataset
    from datasets.distributed import split_dataset_by_node

    train = source.train
    if train is None:  # a hub dataset SAELens would stream itself: stream it here, to shard it
        train = load_dataset(source.dataset_path, split="train", streaming=source.streaming)
    shard = split_dataset_by_node(train, rank=distributed.rank(), world_size=distributed.world_size())
    return replace(source, train=shard)


def shard_cached_activations(store: Any) -> None:
    """Give an ``ActivationsStore`` that reads a SAELens activation cache this rank's contiguous
    shard of the cache's rows (a memory-mapped Arrow table: nothing else is read)."""
    if store.cached_activation_dataset is None:
        return
    from datasets.distributed import split_dataset_by_node

    rows = len(store.cached_activation_dataset)
    if rows < distributed.world_size():
        raise ValueError(f"the activation cache has {rows} rows for {distributed.world_size()} processes")
    store.cached_activation_dataset = split_dataset_by_node(
        store.cached_activation_dataset, rank=distributed.rank(), world_size=distributed.world_size())


def rank_store_batch(batch_tokens: int) -> int:
    """Activations per step of this rank's store: the global batch over the processes."""
    world = distributed.world_size()
    if batch_tokens % world:
        raise ValueError(f"batch_tokens {batch_tokens} must be divisible by the number of processes ({world})")
    return batch_tokens // world


def rank_trainer_config(trainer_cfg: Any) -> Any:
    """The trainer config of a rank whose store yields ``batch / W`` rows: the global batch again
    (the distributed trainer counts global samples, so steps and schedules are a single run's)."""
    return replace(trainer_cfg, train_batch_size_samples=trainer_cfg.train_batch_size_samples * distributed.world_size())


T = TypeVar("T")


# Ranks that train different SAEs finish at different times (hours apart on long runs), so the
# one collective after training gets its own gloo group with no practical timeout; a rank that
# dies still ends the run, through torchrun.
_FINISH_TIMEOUT = timedelta(days=30)
_finish_group: Any = None


def hook_share(plan: list[T]) -> list[T]:
    """This rank's SAEs under ``--distribute-hooks``: entries r, r + N, ... of the run's plan.

    Every rank calls this at the same point of the run (it creates the group that
    :func:`gather_evaluations` uses)."""
    global _finish_group
    world = distributed.world_size()
    if len(plan) < world:
        raise ValueError(f"--distribute-hooks: {len(plan)} SAE(s) for {world} processes; launch at most {len(plan)}")
    _finish_group = dist.new_group(backend="gloo", timeout=_FINISH_TIMEOUT)
    return plan[distributed.rank() :: world]


def rank_checkpoint_dir(checkpoint_dir: Path) -> Path:
    """Each rank's own checkpoint directory under ``--distribute-hooks`` (resume with the same N)."""
    return checkpoint_dir / f"rank{distributed.rank()}_of_{distributed.world_size()}"


def gather_evaluations(evals: dict[str, Any]) -> dict[str, Any]:
    """Every rank's ``{name: SAEEvalResult}``, merged (all ranks call this; plain floats travel)."""
    gathered: list[dict[str, Any] | None] = [None] * distributed.world_size()
    dist.all_gather_object(gathered, evals, group=_finish_group)
    return {name: result for part in gathered for name, result in (part or {}).items()}
