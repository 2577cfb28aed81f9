"""The settings that define a run, recorded in its checkpoint directory and checked on resume.

A checkpoint directory belongs to one run. ``run_settings.json`` (written atomically when the
run starts) records what defines it: the data's identity (path, size, a content fingerprint),
model, hooks, widths, GBA options, optimiser, batch, schedule, seed. What a new call does with a
directory that already holds a run (:func:`prepare_run_directory`):

============================  ===============================================================
settings identical            resume from the newest intact checkpoint (one line says so)
settings differ               refuse, listing each differing setting (old -> new), unless
                              ``resume_anyway`` (continue with a warning) or ``overwrite``
no ``run_settings.json``      refuse (the checkpoints cannot be checked), unless as above
``resume=False``              refuse, unless ``overwrite``: a fresh run never reuses another
                              run's checkpoints, nor deletes them (pruning would)
``overwrite``                 remove the old run's checkpoints (saying so) and start afresh
no checkpoints, but a         refuse, listing each differing setting: a run that ended or
``run_settings.json`` with    stopped before its first checkpoint, whose results a new run
other settings                would replace; ``overwrite`` (or ``resume_anyway``) starts afresh
============================  ===============================================================

Settings that do not change what is trained (device, logging, checkpoint interval) are not
recorded, so a run may resume on another device or with other logging.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from gba_lens.saes.gba_options import OPTIONS_ADDED_LATER

__all__ = [
    "SETTINGS_FILENAME",
    "RunSettingsError",
    "data_fingerprint",
    "file_identity",
    "prepare_run_directory",
    "settings_differences",
]

SETTINGS_FILENAME = "run_settings.json"
_RUN_ENTRIES = ("step_", "final_", ".tmp-", ".old-")


class RunSettingsError(ValueError):
    """A checkpoint directory holds another run (other settings) or cannot be checked."""


def data_fingerprint(activations: Float[torch.Tensor, "n d_in"], rows: int = 64) -> dict[str, Any]:
    """Shape, dtype and the sha256 of ``rows`` evenly spaced rows plus the first and last: cheap
    (independent of the data size) and changed by any other file of the same shape in practice."""
    n = activations.shape[0]
    index = torch.unique(torch.linspace(0, max(n - 1, 0), min(rows, n)).round().long())
    sample = activations[index].detach().to("cpu").contiguous()
    digest = hashlib.sha256(repr((tuple(activations.shape), str(activations.dtype))).encode())
    digest.update(sample.view(torch.uint8).numpy().tobytes() if sample.numel() else b"")
    return {"shape": list(activations.shape), "dtype": str(activations.dtype).removeprefix("torch."),
            "sha256_sampled_rows": digest.hexdigest()}


def file_identity(path: str | Path) -> dict[str, Any]:
    """The resolved path and size of a data file or directory (bytes summed over its files)."""
    path = Path(path).resolve()
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"path": str(path), "bytes": size}


def _flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(settings, dict):
        out: dict[str, Any] = {}
        for key, value in settings.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: settings}


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON would read it back (tuples as lists, other objects as strings)."""
    return json.loads(json.dumps(settings, default=str))


def settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"name: old -> new"`` for each setting (dotted name) that differs."""
    flat_old, flat_new = _flatten(_plain(old)), _flatten(_plain(new))
    missing = object()
    lines = []
    for key in sorted(flat_old.keys() | flat_new.keys()):
        a, b = flat_old.get(key, missing), flat_new.get(key, missing)
        name = key.rsplit(".", 1)[-1]
        if a is missing and name in OPTIONS_ADDED_LATER and b == OPTIONS_ADDED_LATER[name]:
            continue
        if a != b:
            lines.append(f"{key}: {'(unset)' if a is missing else json.dumps(a)} -> "
                         f"{'(unset)' if b is missing else json.dumps(b)}")
    return lines


def _run_entries(directory: Path) -> list[Path]:
    """What a run keeps in ``directory``: checkpoints (also in per-SAE subdirectories), unfinished
    saves and moved-aside corrupt checkpoints are not counted (they hold nothing to resume)."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        if p.is_dir() and p.name.startswith(_RUN_ENTRIES[:2]):
            found.append(p)
        elif p.is_dir() and not p.name.startswith((".", "corrupt-")):
            found.extend(q for q in p.iterdir() if q.is_dir() and q.name.startswith(_RUN_ENTRIES[:2]))
    return sorted(found)


def _remove_run(directory: Path, entries: list[Path]) -> None:
    for p in [*entries, *(q for q in directory.glob("**/.tmp-*") if q.is_dir())]:
        shutil.rmtree(p, ignore_errors=True)
    (directory / SETTINGS_FILENAME).unlink(missing_ok=True)


def _write_settings(directory: Path, settings: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SETTINGS_FILENAME
    tmp = target.with_name(f".tmp-{SETTINGS_FILENAME}-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(_plain(settings), fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def _read_settings(path: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return recorded if isinstance(recorded, dict) else None


def notify(message: str) -> None:
    """One line on stderr (shown by the CLIs and in notebooks alike)."""
    print(f"gba-lens: {message}", file=sys.stderr, flush=True)


def prepare_run_directory(directory: str | Path, settings: dict[str, Any], *, resume: bool = True,
                          resume_anyway: bool = False, overwrite: bool = False) -> bool:
    """Apply the rules of this module's table to ``directory``; returns whether to resume.

    Writes ``settings`` to ``directory/run_settings.json`` (atomically) unless the run resumes
    with identical settings. Raises :class:`RunSettingsError` when the directory holds another
    run and neither ``resume_anyway`` nor ``overwrite`` says what to do with it.
    """
    if resume_anyway and overwrite:
        raise RunSettingsError("resume_anyway and overwrite contradict each other: pass one")
    directory = Path(directory)
    entries = _run_entries(directory)
    recorded = _read_settings(directory / SETTINGS_FILENAME)
    differences = [] if recorded is None else settings_differences(recorded, settings)
    if not entries:  # nothing to resume: start afresh, unless that replaces another run's results
        if differences and not (overwrite or resume_anyway):
            raise RunSettingsError(
                f"{directory} holds a run with other settings that left no checkpoint (it ended or stopped "
                "before its first): " + "; ".join(differences) + ". A new run would replace its results there: "
                "pass --overwrite to start afresh, or choose another output directory")
        if differences:
            warnings.warn(f"{directory} held a run with other settings and no checkpoint: starting afresh "
                          "(" + "; ".join(differences) + ")", stacklevel=2)
        _write_settings(directory, settings)
        return False
    if overwrite:
        _remove_run(directory, entries)
        warnings.warn(f"--overwrite: removed the previous run's {len(entries)} checkpoint(s) from {directory}",
                      stacklevel=2)
        _write_settings(directory, settings)
        return False
    if not resume:
        raise RunSettingsError(
            f"{directory} holds the checkpoints of another run ({len(entries)}); a fresh run (--no-resume) "
            "never reuses or deletes them: choose another output directory or pass --overwrite to remove them"
        )
    if recorded is None:
        problem = (f"{directory} holds checkpoints but no readable {SETTINGS_FILENAME} (an older gba_lens, "
                   "or a damaged file), so they cannot be checked against this run's settings")
    else:
        problem = f"{directory} holds a run with other settings: " + "; ".join(differences)
    if recorded is not None and not differences:
        return True
    if not resume_anyway:
        raise RunSettingsError(
            f"{problem}. Resume it with the old settings, pass --resume-anyway to continue it with these, "
            "--overwrite to discard it, or choose another output directory"
        )
    warnings.warn(f"--resume-anyway: {problem}; continuing it with the new settings", stacklevel=2)
    _write_settings(directory, settings)
    return True
