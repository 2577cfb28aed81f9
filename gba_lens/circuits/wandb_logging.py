"""Offline-safe W&B logging for the circuit utilities.

Every utility in :mod:`gba_lens.circuits` takes ``logger=``: ``None`` (default, no logging),
``True`` (log to the active W&B run, or start one in project ``"gba_lens-circuits"``) or a
:class:`WandbLogger`. What is logged: the call's configuration (under ``config[<utility>]``),
the result table (``wandb.Table``), scalars and plots (``wandb.Image`` of matplotlib figures).

Offline safety: when neither ``WANDB_MODE`` nor ``WANDB_API_KEY`` is set, a run is started in
offline mode (never prompting for a login); with ``WANDB_MODE=disabled`` nothing is written. Any
exception raised by wandb (not installed, no disk, bad key...) becomes one ``UserWarning`` and
logging is switched off for that logger: the caller's computation never fails because of W&B.
(The module is not called ``logging.py`` so that it can never shadow the standard library.)
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any

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
        self.enabled = True
        self.errors: list[str] = []

    # ------------------------------------------------------------------------- run handling
    def _fail(self, what: str, exc: BaseException) -> None:
        self.errors.append(f"{what}: {exc!r}")
        if self.enabled:
            warnings.warn(
                f"W&B logging failed ({what}: {exc!r}); continuing without W&B logging.",
                UserWarning,
                stacklevel=3,
            )
        self.enabled = False

    @property
    def run(self) -> Any:
        """The W&B run (started on first use); None when logging is off or failed."""
        if not self.enabled:
            return None
        if self._run is not None:
            return self._run
        try:
            import wandb

            if wandb.run is not None:
                self._run = wandb.run
                return self._run
            if os.environ.get("WANDB_MODE") is None and not os.environ.get("WANDB_API_KEY"):
                self.init_kwargs.setdefault("mode", "offline")  # never prompt for a login
            self._run = wandb.init(
                project=self.project,
                name=self.run_name,
                config=_jsonable(self.config),
                reinit="finish_previous",
                **self.init_kwargs,
            )
            self._owns_run = True
        except Exception as exc:  # noqa: BLE001 - never crash the caller
            self._fail("wandb.init", exc)
            return None
        return self._run

    def finish(self) -> None:
        """Finish the run if this logger started it."""
        if self._owns_run and self._run is not None:
            try:
                self._run.finish()
            except Exception as exc:  # noqa: BLE001
                self._fail("finish", exc)
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
        try:
            run.config.update({self._key(name): _jsonable(config)}, allow_val_change=True)
        except Exception as exc:  # noqa: BLE001
            self._fail("config", exc)

    def log_scalars(self, values: Mapping[str, float]) -> None:
        """Log scalars (also copied to the run summary)."""
        run = self.run
        if run is None:
            return
        try:
            clean = {self._key(k): float(v) for k, v in values.items()}
            run.log(clean)
            for k, v in clean.items():
                run.summary[k] = v
        except Exception as exc:  # noqa: BLE001
            self._fail("scalars", exc)

    def log_table(self, key: str, table: Any) -> None:
        """Log a pandas DataFrame as a ``wandb.Table``."""
        run = self.run
        if run is None:
            return
        try:
            import wandb

            run.log({self._key(key): wandb.Table(dataframe=table.reset_index(drop=True))})
        except Exception as exc:  # noqa: BLE001
            self._fail("table", exc)

    def log_figure(self, key: str, figure: Any) -> None:
        """Log a matplotlib figure as an image."""
        run = self.run
        if run is None:
            return
        try:
            import wandb

            run.log({self._key(key): wandb.Image(figure)})
        except Exception as exc:  # noqa: BLE001
            self._fail("figure", exc)

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
    try:
        lg.log_config(name, config)
        if table is not None:
            lg.log_table(f"{name}/table", table)
        if scalars:
            lg.log_scalars({f"{name}/{k}": v for k, v in scalars.items()})
        for key, fig in (figures or {}).items():
            lg.log_figure(f"{name}/{key}", fig)
    except Exception as exc:  # noqa: BLE001 - belt and braces: never crash the caller
        warnings.warn(f"W&B logging failed: {exc!r}", UserWarning, stacklevel=3)
