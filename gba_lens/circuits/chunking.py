"""Chunking of long loops into batched forward passes, with optional tqdm progress."""

from __future__ import annotations

import math
from collections.abc import Iterator

__all__ = ["chunks", "n_chunks", "progress_chunks"]


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


def n_chunks(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0


def progress_chunks(n: int, size: int, desc: str, progress: bool) -> Iterator[tuple[int, int]]:
    """``chunks(n, size)``, with a tqdm bar when ``progress``."""
    if not progress:
        return chunks(n, size)
    from tqdm.auto import tqdm

    return iter(tqdm(list(chunks(n, size)), total=n_chunks(n, size), desc=desc, leave=False))

