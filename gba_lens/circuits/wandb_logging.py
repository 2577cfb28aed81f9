"""W&B logging for the circuit utilities, on top of :mod:`gba_lens.wandb_run`.

Every utility in :mod:`gba_lens.circuits` takes ``logger=``: ``None`` (default, no logging),
``True`` (log to the active W&B run, or start one in project ``"gba_lens-circuits"``) or a
:class:`WandbLogger`. What is logged: the call's configuration (under ``config[<utility>]``),
the result table (``wandb.Table``), scalars and plots (``wandb.Image`` of matplotlib figures).

The run mode follows :func:`gba_lens.wandb_run.wandb_mode` (``WANDB_MODE`` if set, else online
iff W&B is configured, else offline; ``disabled`` writes nothing). Any exception raised by wandb
(not installed, no disk, bad key...) becomes one ``UserWarning`` via a
:class:`~gba_lens.wandb_run.WandbGuard` and logging is switched off for that logger: the
caller's computation never fails because of W&B. (The module is not called ``logging.py`` so
that it can never shadow the standard library.)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from gba_lens.wandb_run import WandbGuard, init_run

__all__ = ["WandbLogger", "resolve_logger"]

DEFAULT_PROJECT = "gba_lens-circuits"


def _clean_key(key: str) -> str:
    """W&B keys: keep ``/`` as a section separator, drop characters W&B rejects."""
    return re.sub(r"[^0-9A-Za-z_./\- ]", "_", key)


def _jsonable(value: Any) -> Any:
    """Config values W&B can store (tensors become lists, unknown objects their repr)."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().tolist() if value.numel() <= 10_000 else f"tensor{list(value.shape)}"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(value)


class WandbLogger:
    """Log circuit results to W&B without ever raising.

    Args:
        project: project of a run started by this logger (ignored when ``run`` is given or a
            run is already active).
        run_name: name of a run started by this logger.
        config: extra configuration for a run started by this logger.
        run: an existing ``wandb`` run to log to.
        prefix: prepended to every key (e.g. ``"ioi/"``).
        init_kwargs: more ``wandb.init`` arguments (e.g. ``dir=...``, ``mode="offline"``).

    The run is started lazily, on the first log call. :meth:`finish` ends it only if this
    logger started it. Usable as a context manager.
    """

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        run: Any = None,
        prefix: str = "",
        **init_kwargs: Any,
    ) -> None:
        self.project = project
        self.run_name = run_name
        self.config = dict(config or {})
        self.prefix = prefix
        self.init_kwargs = init_kwargs
        self._run = run
        self._owns_run = False
        self._guard = WandbGuard("W&B logging")

    # ------------------------------------------------------------------------- run handling
    @property
    def enabled(self) -> bool:
        """False once W&B failed (or the mode is ``disabled``): later calls log nothing."""
        return self._guard.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._guard.enabled = bool(value)

    @property
    def errors(self) -> list[str]:
        """Every W&B failure seen by this logger (only the first one was warned about)."""
        return self._guard.errors

    def _start(self) -> Any:
        import wandb

        if wandb.run is not None:
            return wandb.run
        run = init_run(self.project, self.run_name, _jsonable(self.config), **self.init_kwargs)
        if run is None:  # mode "disabled": the user switched W&B off, which is not a failure
            self._guard.enabled = False
        self._owns_run = run is not None
        return run

    @property
    def run(self) -> Any:
        """The W&B run (started on first use); None when logging is off or failed."""
        if not self.enabled:
            return None
        if self._run is None:
            self._run = self._guard.call("wandb.init", self._start)
        return self._run

    def finish(self) -> None:
        """Finish the run if this logger started it."""
        if self._owns_run and self._run is not None:
            self._guard.call("finish", self._run.finish)
        self._run = None
        self._owns_run = False

    def __enter__(self) -> WandbLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()

    # --------------------------------------------------------------------------- log calls
    def _key(self, key: str) -> str:
        return _clean_key(self.prefix + key)

    def log_config(self, name: str, config: Mapping[str, Any]) -> None:
        """Store ``config`` under ``run.config[name]``."""
        run = self.run
        if run is None:
            return
        with self._guard.catch("config"):
            run.config.update({self._key(name): _jsonable(config)}, allow_val_change=True)

    def log_scalars(self, values: Mapping[str, float]) -> None:
        """Log scalars (also copied to the run summary)."""
        run = self.run
        if run is None:
            return
        with self._guard.catch("scalars"):
            clean = {self._key(k): float(v) for k, v in values.items()}
            run.log(clean)
            for k, v in clean.items():
                run.summary[k] = v

    def log_table(self, key: str, table: Any) -> None:
        """Log a pandas DataFrame as a ``wandb.Table``."""
        run = self.run
        if run is None:
            return
        with self._guard.catch("table"):
            import wandb

            run.log({self._key(key): wandb.Table(dataframe=table.reset_index(drop=True))})

    def log_figure(self, key: str, figure: Any) -> None:
        """Log a matplotlib figure as an image."""
        run = self.run
        if run is None:
            return
        with self._guard.catch("figure"):
            import wandb

            run.log({self._key(key): wandb.Image(figure)})

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"WandbLogger(project={self.project!r}, prefix={self.prefix!r}, {state})"


def resolve_logger(logger: WandbLogger | bool | None) -> WandbLogger | None:
    """``True`` -> a default :class:`WandbLogger`; ``None``/``False`` -> no logging."""
    if logger is None or logger is False:
        return None
    if logger is True:
        return WandbLogger()
    if isinstance(logger, WandbLogger):
        return logger
    raise TypeError(f"logger must be None, a bool or a WandbLogger, got {type(logger).__name__}.")


def log_result(
    logger: WandbLogger | bool | None,
    name: str,
    config: Mapping[str, Any],
    table: Any = None,
    scalars: Mapping[str, float] | None = None,
    figures: Mapping[str, Any] | None = None,
) -> None:
    """Log one utility call (config, table, scalars, figures); never raises."""
    try:
        lg = resolve_logger(logger)
    except TypeError as exc:
        warnings.warn(str(exc), UserWarning, stacklevel=3)
        return
    if lg is None:
        return
    with lg._guard.catch(name):
        lg.log_config(name, config)
        if table is not None:
            lg.log_table(f"{name}/table", table)
        if scalars:
            lg.log_scalars({f"{name}/{k}": v for k, v in scalars.items()})
        for key, fig in (figures or {}).items():
            lg.log_figure(f"{name}/{key}", fig)
