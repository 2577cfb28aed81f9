"""Typed result rows: one :class:`MethodSummary` per method, aggregated over seeds.

A summary turns into the flat row of the tables and JSON files with :meth:`MethodSummary.as_row`
(keys ``frr_08``, ``frr_08_std``, ...), so the files keep one format while code reads fields.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gba_lens.experiments.runs import MethodSpec, RunRecord
from gba_lens.synthetic.metrics import cross_seed_consistency

METRICS = ("frr_08", "frr_09", "mcc", "f1", "l0", "explained_variance", "dead_fraction")
"""The :class:`~gba_lens.synthetic.metrics.RecoveryResult` fields summarised over seeds."""


@dataclass
class MeanStd:
    """A mean over seeds and its sample standard deviation (0 for one seed)."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStd:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class MethodSummary:
    """One method's results over seeds."""

    method: str
    """The spec's display label."""
    seeds: int
    frr_08: MeanStd
    frr_09: MeanStd
    mcc: MeanStd
    f1: MeanStd
    l0: MeanStd
    explained_variance: MeanStd
    dead_fraction: MeanStd
    true_l0: float
    seconds: float
    """Mean training time of one run."""
    paper: tuple[float, float] | None = None
    """The paper's FRR at tau 0.8 / 0.9, where it reports one."""
    role: str | None = None
    """The spec's role (see :attr:`MethodSpec.role`)."""
    consistency: dict[float, float] = field(default_factory=dict)
    """Cross-seed consistency by alpha (share of most active neurons), set by :func:`add_consistency`."""

    def metric(self, name: str) -> MeanStd:
        return getattr(self, name)

    def as_row(self) -> dict[str, Any]:
        """The flat row of the tables and JSON files: ``method``, ``seeds``, each metric and its
        ``_std``, ``true_l0``, ``seconds``, then ``paper_frr_08/09`` and ``consistency_<alpha>``
        where present."""
        row: dict[str, Any] = {"method": self.method, "seeds": self.seeds}
        for name in METRICS:
            row[name], row[name + "_std"] = self.metric(name).mean, self.metric(name).std
        row["true_l0"] = self.true_l0
        row["seconds"] = self.seconds
        if self.paper is not None:
            row["paper_frr_08"], row["paper_frr_09"] = self.paper
        for alpha, value in self.consistency.items():
            row[f"consistency_{alpha:g}"] = value
        return row


def summarise(records: Sequence[RunRecord], specs: Sequence[MethodSpec]) -> list[MethodSummary]:
    """Mean and spread (sample std) over seeds, one summary per spec that has runs."""
    rows = []
    for spec in specs:
        runs = [r for r in records if r.label == spec.label]
        if not runs:
            continue
        metrics = {name: MeanStd.of([getattr(r.result, name) for r in runs]) for name in METRICS}
        rows.append(MethodSummary(
            method=spec.label, seeds=len(runs), **metrics, true_l0=runs[0].result.true_l0,
            seconds=statistics.fmean(r.seconds for r in runs), paper=spec.paper, role=spec.role,
        ))
    return rows


def add_consistency(rows: Sequence[MethodSummary], records: Sequence[RunRecord],
                    alphas: Sequence[float] = (1.0, 0.1)) -> None:
    """Mean over seed pairs of the share of the top-alpha most active neurons whose best match in
    the other seed's SAE has cosine > 0.9 (the paper's feature consistency)."""
    for row in rows:
        runs = [r for r in records if r.label == row.method and r.directions is not None]
        if len(runs) < 2:
            continue
        for alpha in alphas:
            values = [
                cross_seed_consistency(a.directions, b.directions, a.frequencies, alpha=alpha)
                for i, a in enumerate(runs) for j, b in enumerate(runs) if i != j
            ]
            row.consistency[alpha] = statistics.fmean(values)


def by_role(rows: Sequence[MethodSummary], role: str) -> list[MethodSummary]:
    """The rows that fill ``role``; a one-line error if there are none."""
    found = [r for r in rows if r.role == role]
    if not found:
        raise ValueError(f"no result row has role {role!r} (roles: {sorted({str(r.role) for r in rows})})")
    return found
