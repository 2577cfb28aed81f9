"""Writing results: markdown tables, JSON + markdown files, figures and the W&B upload."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Union


class HasRow(Protocol):
    def as_row(self) -> dict[str, Any]: ...


Row = Union[Mapping[str, Any], HasRow]


def as_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Typed result rows (anything with ``as_row()``) and plain dicts, as plain dicts."""
    return [dict(r) if isinstance(r, Mapping) else r.as_row() for r in rows]


def markdown_table(rows: Sequence[Row], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as a markdown table; a column ``key`` with ``key_std`` prints as mean ± std."""
    header = "| " + " | ".join(title for _, title in columns) + " |"
    lines = [header, "|" + "---|" * len(columns)]
    for row in as_rows(rows):
        cells = []
        for key, _ in columns:
            value = row.get(key, "")
            if isinstance(value, float):
                pct = key.startswith(("frr", "paper_frr"))
                fmt = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}")
                cell = fmt(value)
                if key + "_std" in row and row.get("seeds", 1) > 1:
                    cell += f" ± {fmt(row[key + '_std'])}" if not pct else f" ± {100 * row[key + '_std']:.1f}"
                cells.append(cell)
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out_dir: Path | None, name: str, rows: Sequence[Row], table: str, config: Any) -> None:
    """``<name>.json`` (config and rows) and ``<name>.md`` (the table) in ``out_dir`` (None: nothing)."""
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"config": config, "rows": as_rows(rows)}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    (out_dir / f"{name}.md").write_text(table + "\n")


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (figures go to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_l0_axis(ax: Any) -> None:
    """A log-scale L0 axis labelled in plain numbers at 1, 2, 5 and their powers of ten (matplotlib's default
    labels every minor tick of a short log range in scientific notation, and they overlap)."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("L0")


def save_figure(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def log_to_wandb(project: str | None, name: str, table_md: str, rows: Sequence[Row], images: Sequence[Path]) -> None:
    """Log a result table and its figures as one W&B run (none when ``project`` is None).

    The run starts and ends through :mod:`gba_lens.wandb_run` (online only when W&B is
    configured); a failure while logging warns and never stops the experiment.
    """
    if project is None:
        return
    from gba_lens.wandb_run import WandbGuard, finish_run, start_run

    if not start_run(project, name=name, config={"command": name}):
        return
    guard = WandbGuard(f"W&B logging of {name}")
    try:
        with guard.catch("log results"):
            import wandb

            flat = as_rows(rows)
            if flat:
                columns = sorted({k for r in flat for k in r})
                data = [[str(r.get(c, "")) for c in columns] for r in flat]
                wandb.log({f"{name}/table": wandb.Table(columns=columns, data=data)})
            for img in images:
                wandb.log({f"{name}/{img.stem}": wandb.Image(str(img))})
            wandb.run.summary["table_markdown"] = table_md  # type: ignore[union-attr]
    finally:
        finish_run()
