"""Training state on disk as safetensors + JSON, written atomically. Never pickle.

SAELens's trainer saves its state (optimizer, scheduler, counters) with ``torch.save``, and
resuming would unpickle it. gba_lens checkpoints are files a user may hand around, so nested
state dicts are split here into a flat safetensors file of tensors and a JSON skeleton that
points into it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__int_keys__"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, foreign or corrupted."""


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        int_keys = bool(obj) and all(isinstance(k, int) for k in obj)
        out = {str(k): _flatten(v, tensors, f"{prefix}.{k}" if prefix else str(k)) for k, v in obj.items()}
        if int_keys:
            out[_INTKEYS] = True
        return out
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at {prefix!r} in a safetensors checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        int_keys = obj.pop(_INTKEYS, False)
        return {(int(k) if int_keys else k): _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(directory: Path, name: str, state: dict[str, Any]) -> None:
    """Write ``state`` as ``{name}.safetensors`` + ``{name}.json`` in ``directory``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors, "")
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(directory: Path, name: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Inverse of :func:`save_state`; raises :class:`CheckpointError` on a bad checkpoint."""
    json_path, st_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not json_path.exists() or not st_path.exists():
        raise CheckpointError(f"{directory} is not a gba_lens checkpoint: {name}.json/.safetensors missing")
    try:
        skeleton = json.loads(json_path.read_text())
        tensors = load_file(str(st_path), device=str(device))
        return _unflatten(skeleton, tensors)
    except (json.JSONDecodeError, SafetensorError, KeyError, OSError) as exc:
        raise CheckpointError(f"corrupted checkpoint state {st_path}: {exc}") from exc


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` in one rename.

    A run killed while writing leaves ``target`` as it was (and a ``.tmp-*`` folder that the
    next save ignores), so a checkpoint directory is always complete or absent.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
