"""Training state on disk as safetensors + JSON, written atomically. Never pickle.

SAELens's trainer saves its state (optimizer, scheduler, counters) with ``torch.save``, and
resuming would unpickle it. gba_lens checkpoints are files a user may hand around, so nested
state dicts are split here into a flat safetensors file of tensors and a JSON skeleton that
points into it.
"""

from __future__ import annotations

import hashlib
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


CHECKSUMS_FILENAME = "checksums.json"
"""Each checkpoint directory's manifest: the sha256 of every other file in it (subdirectories
included), written last, before the directory is renamed into place."""


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
    """Inverse of :func:`save_state`; raises :class:`CheckpointError` naming the bad file."""
    json_path, st_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    for path in (json_path, st_path):
        if not path.exists():
            raise CheckpointError(f"{directory} is not a gba_lens checkpoint: {path.name} is missing")
    try:
        skeleton = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"corrupted checkpoint state {json_path}: {exc}") from exc
    try:
        tensors = load_file(str(st_path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"corrupted checkpoint state {st_path}: {exc}") from exc
    try:
        return _unflatten(skeleton, tensors)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"corrupted checkpoint state {json_path}: it names no tensor {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CHECKSUMS_FILENAME)


def write_checksums(directory: Path) -> None:
    """Record the sha256 of every file under ``directory`` in its ``checksums.json``."""
    directory = Path(directory)
    sums = {p.relative_to(directory).as_posix(): _sha256(p) for p in _files(directory)}
    (directory / CHECKSUMS_FILENAME).write_text(json.dumps(sums, indent=1, sort_keys=True))


def verify_checksums(directory: Path) -> None:
    """Check every file of a checkpoint against its ``checksums.json`` (truncation, bit flips,
    edits, missing files); raises :class:`CheckpointError` naming the first bad file. A directory
    without a manifest (written before checksums existed) is accepted as it is."""
    directory = Path(directory)
    manifest = directory / CHECKSUMS_FILENAME
    if not manifest.exists():
        return
    try:
        sums = json.loads(manifest.read_text())
        if not isinstance(sums, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"corrupted checkpoint manifest {manifest}: {exc}") from exc
    for rel, expected in sorted(sums.items()):
        path = directory / rel
        if not path.is_file():
            raise CheckpointError(f"incomplete checkpoint {directory}: {path}, listed in {manifest.name}, is missing")
        if _sha256(path) != expected:
            raise CheckpointError(f"corrupted checkpoint file {path}: its sha256 differs from the one recorded "
                                  f"at save in {manifest.name} (one of the two is damaged)")


def remove_stale_temporaries(parent: Path, keep: Path | None = None) -> list[Path]:
    """Remove ``.tmp-*`` / ``.old-*`` directories that a killed save left in ``parent``."""
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        if p.is_dir() and p.name.startswith((".tmp-", ".old-")) and p != keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` in one rename.

    A run killed while writing leaves ``target`` as it was (and a ``.tmp-*`` folder that the
    next save removes), so a checkpoint directory is always complete or absent. The checksums of
    everything written are recorded (``checksums.json``) before the rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        write_checksums(tmp)
        for f in [*_files(tmp), tmp / CHECKSUMS_FILENAME]:  # flush contents before the rename
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_directory(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (not supported on every platform)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
