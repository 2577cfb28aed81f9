"""Token streams: texts -> one token stream -> BOS-prefixed rows -> a ``datasets.Dataset``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from jaxtyping import Int

if TYPE_CHECKING:
    import datasets

__all__ = ["chunk_stream", "rows_dataset", "special_token_id", "tokenize_corpus"]


def special_token_id(tokenizer: Any, attr: str) -> int:
    """``tokenizer.<attr>`` (e.g. ``bos_token_id``) as an int; a clear error when it is missing."""
    token_id = getattr(tokenizer, attr, None)
    if token_id is None:
        raise ValueError(f"tokenizer has no {attr.removesuffix('_id')}; the stdlib data needs one")
    return int(token_id)


def tokenize_corpus(tokenizer: Any, texts: Sequence[str]) -> Int[np.ndarray, " n_tokens"]:
    """One int32 token stream: each text's tokens followed by the EOS token (file separator).

    Uses the fast tokenizer's batch API directly (all of the stdlib in a few seconds) and skips
    the model-length check, since the texts are chunked afterwards.
    """
    eos = special_token_id(tokenizer, "eos_token_id")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # encode_batch_fast (tokenizers >= 0.21) skips the offset tracking this does not need.
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        ids = [e.ids for e in encode(list(texts), add_special_tokens=False)]
    else:  # a slow tokenizer still works, just slower
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    total = sum(len(x) + 1 for x in ids)
    stream = np.empty(total, dtype=np.int32)
    pos = 0
    for x in ids:
        stream[pos : pos + len(x)] = x
        stream[pos + len(x)] = eos
        pos += len(x) + 1
    return stream


def chunk_stream(
    stream: Int[np.ndarray, " n_tokens"], context_size: int, bos_id: int
) -> Int[np.ndarray, "n_rows context"]:
    """``[n, context_size]`` int64 rows: BOS then ``context_size - 1`` consecutive tokens."""
    if context_size < 2:
        raise ValueError(f"context_size must be >= 2, got {context_size}")
    body = context_size - 1
    n = len(stream) // body
    rows = np.empty((n, context_size), dtype=np.int64)
    rows[:, 0] = bos_id
    rows[:, 1:] = stream[: n * body].reshape(n, body)
    return rows


def rows_dataset(rows: Int[np.ndarray, "n_rows context"]) -> "datasets.Dataset":
    """``[n, ctx]`` int tokens as a ``datasets.Dataset`` with a ``tokens`` column.

    The Arrow column is built directly: ``Dataset.from_dict`` on Python lists takes seconds for
    the stdlib corpus.
    """
    import datasets
    import pyarrow as pa

    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n, ctx = rows.shape
    offsets = pa.array(np.arange(0, n * ctx + 1, ctx, dtype=np.int32))
    return datasets.Dataset(pa.table({"tokens": pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1)))}))
