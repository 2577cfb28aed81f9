"""Cached activations on disk: a safetensors file or a SAELens activation cache, as ``[n, d_in]``."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ["ChunkedRows", "activations_hook", "all_finite", "first_non_finite_row", "load_activations",
           "map_activations", "save_activations"]

# safetensors dtype -> (numpy dtype of the mapped bytes, torch dtype of the rows)
_MAPPABLE = {"F64": (np.float64, torch.float64), "F32": (np.float32, torch.float32),
             "F16": (np.float16, torch.float16), "BF16": (np.uint16, torch.bfloat16)}


def load_activations(path: str | Path, hook_name: str | None = None) -> Float[torch.Tensor, "n d_in"]:
    """Load cached activations as a [n, d_in] float tensor.

    Accepts a ``.safetensors`` file (one tensor, or the key ``activations`` / ``hook_name``) or a
    directory written by SAELens's ``CacheActivationsRunner`` (a Hugging Face dataset with one
    column per hook). The tensor must have at least 2 dimensions, the last being d_in; leading
    (token) dimensions are flattened. A 1-D tensor is refused. No pickle is ever loaded.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cached activations at {path}")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: cached activations must be a .safetensors file or a SAELens cache dir")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
        acts = tensors[_tensor_key(path, list(tensors), hook_name)]
    else:
        ds, column = _open_cache(path, hook_name)
        acts = ds.with_format("torch")[:][column]  # [:] first: datasets 5 returns a lazy Column
    _check_shape(path, tuple(acts.shape))
    return acts.float().reshape(-1, acts.shape[-1])


def _tensor_key(path: Path, names: list[str], hook_name: str | None) -> str:
    """The tensor of a safetensors file that holds the activations: ``hook_name``, else
    ``activations``, else the only one."""
    for key in (hook_name, "activations"):
        if key in names:
            return key
    if len(names) != 1:
        raise ValueError(f"{path} holds {sorted(names)}; pass hook_name to choose one")
    return names[0]


def _open_cache(path: Path, hook_name: str | None) -> tuple[Any, str]:
    """A SAELens cache directory as a Hugging Face dataset, and the column of ``hook_name`` (the
    only column when it is None)."""
    import datasets

    if not (path / "dataset_info.json").exists() and not (path / "state.json").exists():
        raise ValueError(f"{path} is not a SAELens activation cache (no dataset_info.json)")
    ds = datasets.load_from_disk(str(path))
    columns = ds.column_names
    if hook_name is None:
        if len(columns) != 1:
            raise ValueError(f"{path} caches {columns}; pass hook_name to choose one")
        hook_name = columns[0]
    if hook_name not in columns:
        import difflib

        close = difflib.get_close_matches(hook_name, columns, n=3)
        raise KeyError(f"{path} has no activations for {hook_name!r}; close matches: {close}")
    return ds, hook_name


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"{path}: activations have shape {shape}; they must be [n, d_in] "
            "(or [..., d_in], e.g. [batch, context, d_in], flattened to rows)"
        )
    if shape[-1] == 0:
        raise ValueError(f"{path}: activations have shape {shape}: d_in is 0")
    if int(np.prod(shape[:-1])) == 0:
        raise ValueError(f"{path}: no activations cached")


def map_activations(path: str | Path, hook_name: str | None = None) -> torch.Tensor | ChunkedRows:
    """Cached activations as a [n, d_in] tensor backed by the file (memory-mapped, copy-on-write).

    Rows are read from disk when indexed, so a process holds a batch of them, not the dataset, and
    processes on one machine share the file's pages (data-parallel ranks). The rows keep the file's
    dtype (float32, float16, bfloat16 or float64). A SAELens cache directory (Arrow files) is mapped
    the same way: one tensor per Arrow chunk, joined by :class:`ChunkedRows`.
    """
    path = Path(path)
    if path.is_dir():
        return _map_cache_directory(path, hook_name)
    if not path.is_file() or path.suffix != ".safetensors":
        return load_activations(path, hook_name)
    header, header_len = _safetensors_header(path)
    header.pop("__metadata__", None)
    key = _tensor_key(path, list(header), hook_name)
    entry = header[key]
    shape = tuple(int(n) for n in entry["shape"])
    _check_shape(path, shape)
    if entry["dtype"] not in _MAPPABLE:
        raise ValueError(f"{path}: activations of dtype {entry['dtype']} (need one of {sorted(_MAPPABLE)})")
    np_dtype, torch_dtype = _MAPPABLE[entry["dtype"]]
    start, end = (int(n) for n in entry["data_offsets"])
    if end - start != int(np.prod(shape)) * np.dtype(np_dtype).itemsize or 8 + header_len + end > path.stat().st_size:
        raise ValueError(f"{path}: the {key!r} tensor's byte range does not match its shape {shape} (truncated?)")
    mapped = np.memmap(path, dtype=np_dtype, mode="c", offset=8 + header_len + start, shape=shape)
    return torch.from_numpy(mapped).view(torch_dtype).reshape(-1, shape[-1])


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header (tensors and ``__metadata__``) and its length in bytes."""
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            return json.loads(f.read(header_len)), header_len
    except (OSError, struct.error, ValueError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc


def activations_hook(path: str | Path, hook_name: str | None = None) -> str | None:
    """The hook whose activations ``path`` holds, where it says so: ``hook_name`` when given, a SAELens
    cache's only column, a safetensors file's tensor named after a hook (a TransformerLens name, with
    ``hook_``) or its ``hook_name`` metadata (``save_activations(path, rows, hook_name=...)``); else None."""
    if hook_name is not None:
        return hook_name
    path = Path(path)
    if path.is_dir():
        return _open_cache(path, None)[1]
    if not path.is_file() or path.suffix != ".safetensors":
        return None
    header, _ = _safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    key = _tensor_key(path, list(header), None)
    return key if "hook_" in key else metadata.get("hook_name")


class ChunkedRows:
    """[n, d_in] rows kept in several tensors (the memory-mapped Arrow chunks of a SAELens cache),
    indexed like one tensor: ``rows[index_tensor]``, ``rows[a:b]``, ``rows[i]``, ``shape``, ``dtype``,
    ``len``. An index gathers from the blocks it touches; nothing is joined in memory."""

    def __init__(self, blocks: list[torch.Tensor]):
        if not blocks or len({(b.shape[1], b.dtype) for b in blocks}) != 1:
            raise ValueError("ChunkedRows needs one or more [n_i, d_in] blocks of one width and dtype")
        self.blocks = blocks
        self.ends = torch.tensor([b.shape[0] for b in blocks]).cumsum(0)
        self.shape = torch.Size([int(self.ends[-1]), blocks[0].shape[1]])
        self.dtype = blocks[0].dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, int):
            return self[torch.tensor([index])][0]
        if isinstance(index, slice):
            index = torch.arange(*index.indices(self.shape[0]))
        rows = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        block = torch.searchsorted(self.ends, rows, right=True)
        out = torch.empty(rows.numel(), self.shape[1], dtype=self.dtype)
        for b in torch.unique(block).tolist():
            mask = block == b
            out[mask] = self.blocks[b][rows[mask] - (int(self.ends[b - 1]) if b else 0)]
        return out


def _map_cache_directory(path: Path, hook_name: str | None) -> torch.Tensor | ChunkedRows:
    """The activations of a SAELens cache directory, each Arrow chunk viewed without a copy."""
    import pyarrow as pa

    ds, hook_name = _open_cache(path, hook_name)
    column = ds.data.table.column(hook_name)
    d_in = ds.features[hook_name].shape[-1]
    blocks = []
    try:
        for chunk in column.chunks:
            values = getattr(chunk, "storage", chunk)
            while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
                values = values.flatten()
            with warnings.catch_warnings():  # read-only Arrow memory: the rows are only ever read
                warnings.filterwarnings("ignore", message=".*not writable.*")
                blocks.append(torch.from_numpy(values.to_numpy(zero_copy_only=True)).reshape(-1, d_in))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError):
        return load_activations(path, hook_name)  # an Arrow layout that cannot be viewed: load it
    blocks = [b for b in blocks if b.shape[0]]
    if not blocks:
        raise ValueError(f"{path}: no activations cached")
    return blocks[0] if len(blocks) == 1 else ChunkedRows(blocks)


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of a floating-point tensor is finite. A NaN or inf makes the sum NaN or inf, so a
    finite sum answers in one reduction (summed in float32 at least: a float16 sum overflows at 65,504); a sum
    that overflows from finite values is checked value by value. (``torch.isfinite(tensor).all()`` alone
    writes a boolean per value, on a CPU ten to forty times the sum's time on a training batch.)"""
    total = tensor.sum(dtype=torch.float64 if tensor.dtype == torch.float64 else torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(tensor).all())


def first_non_finite_row(activations: torch.Tensor | ChunkedRows, chunk_rows: int | None = None) -> tuple[int, int] | None:
    """(first row, count) of NaN/inf values, checked ``chunk_rows`` rows at a time (default: 2^22
    values; a mapped file is read once, never held in memory); None if every value is finite."""
    chunk_rows = chunk_rows or max(1, 2**22 // max(activations.shape[1], 1))
    first, count = -1, 0
    for start in range(0, activations.shape[0], chunk_rows):
        chunk = activations[start : start + chunk_rows]
        if all_finite(chunk):
            continue
        bad = ~torch.isfinite(chunk)
        n_bad = int(bad.sum())
        if n_bad and first < 0:
            first = start + int(bad.any(-1).nonzero()[0])
        count += n_bad
    return None if count == 0 else (first, count)


def save_activations(path: str | Path, activations: Float[torch.Tensor, "n d_in"], **metadata: str) -> None:
    """Write activations as safetensors (the format ``load_activations`` reads)."""
    save_file(
        {"activations": activations.detach().cpu().contiguous()},
        str(path),
        metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in metadata.items()},
    )
