"""Helpers of the fault-injection suite: run a command in a forked child that SIGKILLs itself at
a chosen point, and compare SAEs saved by two runs.

Forking (instead of a fresh interpreter) keeps a kill cheap: the child inherits the imported
libraries, runs ``gba_lens.cli.main`` and is killed with SIGKILL, exactly as ``kill -9`` would.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

FIGURES: Counter[str] = Counter({"kills survived": 0, "corruptions detected": 0, "settings changes refused": 0,
                                 "bad inputs refused": 0, "bytes lost": 0})


# A forked child inherits the parent's threads' state; when another thread of the test process
# (a prefetcher, a W&B service thread) was inside an OpenMP region at the moment of the fork, torch
# in the child can fail with this assertion before the code under test runs. That is a property of
# fork(), not of gba_lens, so such a child is started again, after a pause that lets the other
# threads leave their OpenMP region (up to three times; once was seen to hit it twice in a row).
_FORK_DAMAGE = "Invalid thread pool"


def run_in_child(fn: Callable[[], int], _retries: int = 3) -> tuple[str, int]:
    """Run ``fn`` in a forked process; ``("killed", 9)`` if it died of SIGKILL, else ``("exit", code)``.

    The child's stderr is copied to the parent's (pytest shows it on failure).
    """
    import sys
    import tempfile

    with tempfile.TemporaryFile() as err:
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            os.dup2(err.fileno(), 2)
            sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
            code = 1
            try:
                code = int(fn() or 0)
            except BaseException:  # noqa: BLE001 - the parent only needs the exit status
                import traceback

                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        text = err.read().decode(errors="replace")
    sys.stderr.write(text)
    if os.WIFSIGNALED(status):
        return ("killed", os.WTERMSIG(status))
    if _retries and os.WEXITSTATUS(status) != 0 and _FORK_DAMAGE in text:
        time.sleep(0.5)
        return run_in_child(fn, _retries - 1)
    return ("exit", os.WEXITSTATUS(status))


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner: object, name: str, n: int, after: bool = False) -> None:
    """Patch ``owner.name`` so that its ``n``-th call (1-based) SIGKILLs the process, before the
    call runs (``after``: once it has run)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n and not after:
            kill_self()
        result = original(*args, **kwargs)
        if calls["n"] == n and after:
            kill_self()
        return result

    setattr(owner, name, patched)


def saved_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file under ``directory`` (keyed by file and name)."""
    out = {}
    for f in sorted(Path(directory).rglob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{f.relative_to(directory)}:{k}"] = v
    return out


def assert_identical(a: Path, b: Path) -> None:
    ta, tb = saved_tensors(a), saved_tensors(b)
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def unverifiable_bytes(checkpoints: Path) -> int:
    """Bytes of visible checkpoints (step_*/final_*) that fail their checksums: what a kill lost."""
    from gba_lens.training.state_io import CheckpointError, verify_checksums

    lost = 0
    for d in [*checkpoints.glob("step_*"), *checkpoints.glob("*/step_*")]:
        try:
            verify_checksums(d)
        except CheckpointError:
            lost += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    return lost
