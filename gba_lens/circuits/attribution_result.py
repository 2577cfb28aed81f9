"""The result of an attribution: scores of every feature and error node, as tables.

:class:`AttributionResult` is returned by :func:`gba_lens.circuits.attribute`; its tables feed
:func:`gba_lens.circuits.exact_patching` and :func:`gba_lens.circuits.verify_attribution`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from gba_lens.circuits.types import Node

__all__ = ["AttributionResult", "Node", "TABLE_COLUMNS", "nodes_of"]

TABLE_COLUMNS = ["hook", "node", "feature", "position", "score"]


@dataclass
class AttributionResult:
    """Scores of every feature and error node; see :func:`attribute`.

    Attributes:
        feature_scores: ``{hook: [pos, d_sae]}`` score of each feature at each position (summed
            over prompts).
        error_scores: ``{hook: [pos]}`` score of the error node at each position.
        metric_clean / metric_corrupted: the metric on the clean / corrupted prompts.
        method: ``"atp"`` or ``"ig"``; ``ig_steps``: number of IG steps.
        patched_metric: IG only: ``{hook: metric with every node at the hook patched}``.
        position_labels: optional labels of the positions (e.g. tokens of the first prompt).
    """

    feature_scores: dict[str, torch.Tensor]
    error_scores: dict[str, torch.Tensor]
    metric_clean: float
    metric_corrupted: float
    method: str
    n_prompts: int
    ig_steps: int | None = None
    patched_metric: dict[str, float] = field(default_factory=dict)
    position_labels: list[str] | None = None
    seconds: float = 0.0
    n_forward: int = 0
    n_backward: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def hooks(self) -> list[str]:
        return list(self.feature_scores)

    @property
    def metric_delta(self) -> float:
        """``metric_corrupted - metric_clean``."""
        return self.metric_corrupted - self.metric_clean

    def total(self, hook: str | None = None, include_error: bool = True) -> float:
        """Sum of the scores at ``hook`` (or every hook)."""
        hooks = [hook] if hook is not None else self.hooks
        s = 0.0
        for h in hooks:
            s += float(self.feature_scores[h].double().sum())
            if include_error and h in self.error_scores:
                s += float(self.error_scores[h].double().sum())
        return s

    def completeness_error(self, hook: str) -> float:
        """IG: ``|sum of scores - (patched - clean)| / |patched - clean|`` at ``hook``."""
        if hook not in self.patched_metric:
            raise ValueError("completeness_error needs an IG result (method='ig').")
        target = self.patched_metric[hook] - self.metric_clean
        return abs(self.total(hook) - target) / max(abs(target), 1e-12)

    def feature_totals(self, hook: str) -> torch.Tensor:
        """``[d_sae]`` scores summed over positions (the estimate for patching every position)."""
        return self.feature_scores[hook].sum(0)

    def table(
        self,
        k: int | None = None,
        by: Literal["abs", "neg", "pos"] = "abs",
        include_error: bool = True,
        per_position: bool = True,
        hooks: Sequence[str] | None = None,
    ) -> Any:
        """A pandas DataFrame of nodes (``hook, node, feature, position, score``), top ``k``.

        ``node`` is ``"feature"`` or ``"error"`` (``feature = -1``); with ``per_position=False``
        scores are summed over positions (``position = -1``). ``by``: rank by ``|score|``, most
        negative first, or most positive first. Zero scores are dropped.
        """
        import pandas as pd

        if by not in ("abs", "neg", "pos"):
            raise ValueError(f"by must be 'abs', 'neg' or 'pos', got {by!r}.")
        parts: list[tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for h in hooks or self.hooks:
            fs = self.feature_scores[h]
            if per_position:
                pos, feat = torch.meshgrid(torch.arange(fs.shape[0]), torch.arange(fs.shape[1]), indexing="ij")
                parts.append((h, "feature", feat.flatten(), pos.flatten(), fs.flatten()))
            else:
                parts.append((h, "feature", torch.arange(fs.shape[1]), torch.full((fs.shape[1],), -1), fs.sum(0)))
            if include_error and h in self.error_scores:
                es = self.error_scores[h]
                if per_position:
                    parts.append((h, "error", torch.full((len(es),), -1), torch.arange(len(es)), es))
                else:
                    parts.append((h, "error", torch.tensor([-1]), torch.tensor([-1]), es.sum()[None]))
        frames = []
        for h, kind, feat, pos, score in parts:
            score = score.double().cpu()
            key = {"abs": -score.abs(), "neg": score, "pos": -score}[by]
            keep = score != 0
            idx = torch.nonzero(keep).flatten()
            if k is not None and len(idx) > k:
                idx = idx[torch.topk(-key[idx], k).indices]
            frames.append(
                pd.DataFrame(
                    {"hook": h, "node": kind, "feature": feat[idx].long().numpy(), "position": pos[idx].long().numpy(),
                     "score": score[idx].numpy()}
                )
            )
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TABLE_COLUMNS)
        if len(df):
            key = {"abs": -df["score"].abs(), "neg": df["score"], "pos": -df["score"]}[by]
            df = df.loc[key.sort_values(kind="stable").index].reset_index(drop=True)
        if k is not None:
            df = df.head(k).reset_index(drop=True)
        if self.position_labels is not None and len(df):
            labels = self.position_labels
            df["token"] = [labels[p] if 0 <= p < len(labels) else "" for p in df["position"]]
        return df

    def top(self, k: int = 20, **kwargs: Any) -> Any:
        """The ``k`` top nodes (see :meth:`table`)."""
        return self.table(k=k, **kwargs)

    def nodes(self, k: int = 20, **kwargs: Any) -> list[Node]:
        """The ``k`` top nodes as ``(hook, feature | None, position | None)``."""
        return nodes_of(self.table(k=k, **kwargs))

    def heatmap(self, hook: str | None = None, k: int = 20, **kwargs: Any) -> Any:
        """Matplotlib heatmap of the top-``k`` features (and the error node) over positions."""
        from gba_lens.circuits.plotting import plot_feature_heatmap

        hook = hook if hook is not None else self.hooks[0]
        if hook not in self.feature_scores:
            raise KeyError(f"No scores for {hook!r}; hooks: {self.hooks}.")
        include_error = kwargs.pop("include_error", True)
        labels = kwargs.pop("position_labels", None)
        return plot_feature_heatmap(
            self.feature_scores[hook],
            self.error_scores.get(hook) if include_error else None,
            k=k,
            position_labels=labels if labels is not None else self.position_labels,
            title=f"{self.method.upper()} attribution at {hook}",
            **kwargs,
        )


def nodes_of(table: Any) -> list[Node]:
    """``(hook, feature | None, position | None)`` for each row of an attribution table."""
    out: list[Node] = []
    for row in table.itertuples(index=False):
        feat = None if row.node == "error" else int(row.feature)
        pos = None if int(row.position) < 0 else int(row.position)
        out.append((str(row.hook), feat, pos))
    return out

