"""The one place gba_lens talks to Weights & Biases: which mode, starting and ending a run, and a
guard that turns any W&B failure into one warning.

Mode rule (:func:`wandb_mode`), used by training, experiments and circuits alike:

1. ``WANDB_MODE`` set by the user wins (``online``, ``offline``, ``disabled``; W&B's aliases
   ``dryrun`` → offline, ``run`` → online). ``WANDB_DISABLED=true`` means ``disabled``.
2. Otherwise ``online`` iff W&B is configured: ``WANDB_API_KEY`` is set, or the netrc file
   (``$NETRC``, else ``~/.netrc``, else ``~/_netrc``) has an entry for the W&B host
   (``WANDB_BASE_URL``, default ``https://api.wandb.ai``) — which is what ``wandb login`` writes.
   The file is read directly; ``wandb.login`` is never called because it can reach the network.
3. ``offline`` otherwise: runs are written under ``./wandb`` and can be uploaded later with
   ``wandb sync``. Logging is never switched off silently.

The process environment is never changed: the mode is passed to ``wandb.init(mode=...)``.
(W&B itself records the socket of its background service in ``WANDB_SERVICE``.)

An unreachable server costs at most ``init_timeout`` seconds (W&B's own ``init_timeout``
setting, default :data:`DEFAULT_INIT_TIMEOUT` or ``WANDB_INIT_TIMEOUT``): the failed online
start is reported in one warning and the run continues offline. W&B's own error telemetry may
still try to reach that server once when the interpreter exits; ``WANDB_ERROR_REPORTING=false``
switches that off.
"""

from __future__ import annotations

import functools
import netrc
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

__all__ = [
    "DEFAULT_INIT_TIMEOUT",
    "WandbGuard",
    "WandbMode",
    "finish_run",
    "init_run",
    "start_run",
    "wandb_configured",
    "wandb_mode",
]

WandbMode = Literal["online", "offline", "disabled"]

DEFAULT_INIT_TIMEOUT = 10.0
"""Seconds ``wandb.init`` may wait for the server before the run falls back to offline."""

DEFAULT_BASE_URL = "https://api.wandb.ai"

_MODE_ALIASES: dict[str, WandbMode] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}
_TRUE = {"1", "true", "yes", "on"}

T = TypeVar("T")


# ------------------------------------------------------------------------------------ mode rule
def _netrc_path() -> Path:
    """The netrc file W&B reads: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def _wandb_host() -> str:
    url = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    return urlparse(url if "://" in url else f"https://{url}").hostname or ""


def wandb_configured() -> bool:
    """True when W&B has credentials: ``WANDB_API_KEY`` or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = _netrc_path()
    if not path.is_file():
        return False
    try:
        entry = netrc.netrc(str(path)).authenticators(_wandb_host())
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError):
        return False
    return bool(entry and entry[2])


def wandb_mode() -> WandbMode:
    """The mode a run starts in: ``WANDB_MODE`` if set, else online iff configured, else offline."""
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return "disabled"
    requested = os.environ.get("WANDB_MODE", "").strip().lower()
    if requested:
        if requested in _MODE_ALIASES:
            return _MODE_ALIASES[requested]
        warnings.warn(
            f"WANDB_MODE={requested!r} is not one of online/offline/disabled; ignoring it.",
            UserWarning,
            stacklevel=2,
        )
    return "online" if wandb_configured() else "offline"


# ----------------------------------------------------------------------------------- the guard
class WandbGuard:
    """Turns W&B failures into ONE warning, after which the guarded calls are skipped.

    Use ``guard.call(where, fn, *args)`` (returns ``fn``'s result, or None once failed),
    ``with guard.catch(where): ...`` (check ``guard.enabled`` first to skip work), or
    ``@guard.wrap(where)`` on a function. Every failure is recorded in :attr:`errors`.
    """

    def __init__(self, what: str = "W&B logging") -> None:
        self.what = what
        self.enabled = True
        self.errors: list[str] = []

    def fail(self, where: str, exc: BaseException) -> None:
        """Record ``exc``; warn if this is the first failure; switch the guard off."""
        self.errors.append(f"{where}: {exc!r}")
        if self.enabled:
            warnings.warn(
                f"{self.what} failed ({where}: {exc!r}); continuing without it.",
                UserWarning,
                stacklevel=3,
            )
        self.enabled = False

    @contextmanager
    def catch(self, where: str) -> Iterator[None]:
        """Run the block; an exception from it becomes :meth:`fail` instead of propagating."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - W&B must never stop the caller's work
            self.fail(where, exc)

    def call(self, where: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``fn(*args, **kwargs)`` while enabled; None when disabled or when it raised."""
        if not self.enabled:
            return None
        with self.catch(where):
            return fn(*args, **kwargs)
        return None

    def wrap(self, where: str) -> Callable[[Callable[..., T]], Callable[..., T | None]]:
        """Decorator form of :meth:`call`."""

        def decorate(fn: Callable[..., T]) -> Callable[..., T | None]:
            @functools.wraps(fn)
            def guarded(*args: Any, **kwargs: Any) -> T | None:
                return self.call(where, fn, *args, **kwargs)

            return guarded

        return decorate

    def __repr__(self) -> str:
        return f"WandbGuard({self.what!r}, {'on' if self.enabled else 'off'})"


# --------------------------------------------------------------------------------- run control
def _with_init_timeout(settings: Any, timeout: float) -> Any:
    """``settings`` (None, a dict or ``wandb.Settings``) with ``init_timeout`` defaulted."""
    import wandb

    if settings is None:
        return wandb.Settings(init_timeout=timeout)
    if isinstance(settings, dict):
        return wandb.Settings(**{"init_timeout": timeout, **settings})
    if "init_timeout" in getattr(settings, "model_fields_set", set()):
        return settings
    return settings.model_copy(update={"init_timeout": timeout})


def init_run(
    project: str,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    **init_kwargs: Any,
) -> Any:
    """``wandb.init`` under the mode rule; the run, or None when the mode is ``disabled``.

    Raises when W&B cannot start at all (for callers with their own :class:`WandbGuard`); use
    :func:`start_run` for the never-raising form. An online start that fails is retried offline
    with one warning.
    """
    mode = init_kwargs.pop("mode", None) or wandb_mode()
    if mode == "disabled":
        return None
    timeout = float(init_kwargs.pop("init_timeout", None) or os.environ.get("WANDB_INIT_TIMEOUT") or DEFAULT_INIT_TIMEOUT)
    import wandb

    settings = _with_init_timeout(init_kwargs.pop("settings", None), timeout)
    kwargs: dict[str, Any] = {"reinit": "finish_previous", **init_kwargs}
    if "dir" not in kwargs and os.environ.get("WANDB_DIR"):
        # wandb reads WANDB_DIR once per process; pass the current value so each run honours it
        kwargs["dir"] = os.environ["WANDB_DIR"]
    kwargs.update(project=project, name=name, config=config, settings=settings)
    if mode != "online":
        return wandb.init(mode=mode, **kwargs)
    try:
        return wandb.init(mode="online", **kwargs)
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad key...: fall back to offline
        first = exc
    run = wandb.init(mode="offline", **kwargs)
    warnings.warn(
        f"could not start W&B online ({first!r}); logging offline instead (upload later with `wandb sync`).",
        UserWarning,
        stacklevel=2,
    )
    return run


def start_run(
    project: str | None,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    **init_kwargs: Any,
) -> bool:
    """Start a W&B run in :func:`wandb_mode`; never raises.

    Returns True iff a run is active afterwards (then ``wandb.run`` is that run). Returns False
    without touching W&B when ``project`` is None or the mode is ``disabled``. A previous run of
    this process is finished first. ``init_kwargs`` go to ``wandb.init`` (an explicit ``mode=``
    there overrides the rule; ``init_timeout=`` sets the seconds to wait for the server).
    If the online start fails (server unreachable, bad key...), one warning is given and the run
    is started offline instead; if that fails too, one warning and False.
    """
    if project is None:
        return False
    try:
        if init_run(project, name, config, **init_kwargs) is None:
            return False
        import wandb

        return wandb.run is not None
    except Exception as exc:  # noqa: BLE001 - W&B must never stop the caller's work
        warnings.warn(f"could not start W&B ({exc!r}); continuing without W&B logging.", UserWarning, stacklevel=2)
        return False


def finish_run() -> None:
    """Finish the active W&B run, if any; never raises (a failure is one warning)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"W&B finish failed: {exc!r}", UserWarning, stacklevel=2)
