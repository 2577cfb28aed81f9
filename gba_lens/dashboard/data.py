"""Turn the collected statistics and weight summaries into the JSON the pages render.

``index_rows`` gives one small row per feature (the index table); ``feature_page`` gives one
feature's page data, with its own small vocabulary so that contexts are lists of indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gba_lens.dashboard.collect import FeatureStats
from gba_lens.dashboard.logits import LogitEffects

__all__ = ["GBAGroups", "gba_groups", "TokenStrings", "index_rows", "feature_page"]


@dataclass
class GBAGroups:
    """Each feature's GBA group and the groups' target frequencies."""

    group: torch.Tensor  # [d_sae] int
    targets: list[float]

    def target_of(self, feature: int) -> float:
        return self.targets[int(self.group[feature])]


def gba_groups(sae: Any) -> GBAGroups | None:
    """Groups and targets from the SAE's config metadata (written by gba_lens when it trains a
    GBA SAE: ``training_architecture == "gba"`` with ``n_groups``, ``highest_target``,
    ``lowest_target`` and, since ``target_l0``, the targets at the end of training,
    ``group_targets``), or None for other SAEs."""
    from gba_lens.saes.bias_adaptation import group_index, group_targets

    metadata = getattr(sae.cfg, "metadata", None)
    arch = getattr(metadata, "training_architecture", None)
    details = getattr(metadata, "training_architecture_details", None) or {}
    if arch != "gba" or "n_groups" not in details:
        return None
    d_sae = int(sae.cfg.d_sae)
    n_groups = int(details["n_groups"])
    targets = details.get("group_targets")  # where training moved them
    if targets is None:
        targets = group_targets(n_groups, float(details["highest_target"]), float(details["lowest_target"])).tolist()
    return GBAGroups(group_index(d_sae, n_groups), [float(t) for t in targets])


class TokenStrings:
    """Token id -> display string, decoded once per id (``str(id)`` without a tokenizer)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id not in self._cache:
            if self.tokenizer is None:
                self._cache[token_id] = f"<{token_id}>"
            else:
                self._cache[token_id] = self.tokenizer.decode([token_id])
        return self._cache[token_id]


def _top_tokens(stats: FeatureStats, feature: int, strings: TokenStrings, n: int = 4) -> str:
    """The distinct tokens at which the feature's top activations sit, best first."""
    at = stats.window.left
    seen: list[str] = []
    for value, window in zip(stats.top_value[feature].tolist(), stats.top_tokens[feature]):
        if value == float("-inf"):
            break
        text = strings(int(window[at]))
        if text not in seen:
            seen.append(text)
        if len(seen) == n:
            break
    return " \u2502 ".join(repr(s)[1:-1] if s.strip() != s or not s else s for s in seen)


def index_rows(
    stats: FeatureStats,
    strings: TokenStrings,
    groups: GBAGroups | None,
    effects: LogitEffects | None,
    dense_threshold: float,
) -> list[dict[str, Any]]:
    freq = stats.frequency.tolist()
    mean = stats.mean_active.tolist()
    amax = stats.act_max.tolist()
    rows = []
    for f in range(stats.d_sae):
        row: dict[str, Any] = {
            "id": f, "freq": freq[f], "mean": round(mean[f], 5), "max": round(amax[f], 5),
            "dead": stats.fire_count[f].item() == 0, "dense": freq[f] > dense_threshold,
            "top": _top_tokens(stats, f, strings),
        }
        if groups is not None:
            target = groups.target_of(f)
            row.update(group=int(groups.group[f]), target=target, ratio=freq[f] / target)
        if effects is not None:
            row["logits"] = " ".join(strings(int(t)) for t in effects.top_ids[f, :3])
        rows.append(row)
    return rows


class _Vocab:
    """A page's own vocabulary: token ids -> indices into a list of strings."""

    def __init__(self, strings: TokenStrings) -> None:
        self.strings, self.index, self.list = strings, {}, []

    def __call__(self, token_id: int) -> int:
        if token_id not in self.index:
            self.index[token_id] = len(self.list)
            self.list.append(self.strings(token_id))
        return self.index[token_id]


def _context(vocab: _Vocab, value: float, tokens: torch.Tensor, acts: torch.Tensor, at: int) -> dict[str, Any]:
    keep = tokens >= 0
    first = int(keep[:at].logical_not().sum())  # window positions before the row start
    return {
        "v": round(float(value), 4),
        "t": [vocab(int(t)) for t in tokens[keep].tolist()],
        "a": [round(float(a), 3) for a in acts[keep].tolist()],
        "at": at - first,
    }


def feature_page(
    stats: FeatureStats,
    feature: int,
    strings: TokenStrings,
    groups: GBAGroups | None,
    effects: LogitEffects | None,
    nearest: tuple[torch.Tensor, torch.Tensor] | None,
    group_freq: list[float] | None,
    dense_threshold: float,
    with_pages: set[int] | None = None,
) -> dict[str, Any]:
    """Everything one feature page shows (see ``dashboard.js``: ``renderFeature``)."""
    f = feature
    vocab = _Vocab(strings)
    at = stats.window.left
    top = [
        _context(vocab, v, stats.top_tokens[f, i], stats.top_acts[f, i].float(), at)
        for i, v in enumerate(stats.top_value[f].tolist())
        if v != float("-inf")
    ]
    hist = stats.hist[f]
    total = max(int(hist.sum()), 1)
    rng = float(stats.range[f]) if stats.fire_count[f] > 0 else 0.0
    per_band = stats.n_bins // stats.n_bands
    cumulative = torch.cat([torch.zeros(1, dtype=hist.dtype), hist.cumsum(0)]).tolist()
    bands = []
    for b in range(stats.n_bands):
        row = f * stats.n_bands + b
        kept = torch.isfinite(stats.band_key[row]).nonzero().flatten().tolist()
        order = sorted(kept, key=lambda i: -float(stats.band_value[row, i]))
        bands.append({
            "lo": rng * b / stats.n_bands, "hi": rng * (b + 1) / stats.n_bands,
            "count": int(cumulative[(b + 1) * per_band] - cumulative[b * per_band]),
            "q_lo": cumulative[b * per_band] / total, "q_hi": cumulative[(b + 1) * per_band] / total,
            "samples": [
                _context(vocab, float(stats.band_value[row, i]), stats.band_tokens[row, i], stats.band_acts[row, i].float(), at)
                for i in order
            ],
        })
    count = int(stats.fire_count[f])
    page: dict[str, Any] = {
        "id": f, "count": count, "freq": float(stats.frequency[f]), "mean": float(stats.mean_active[f]),
        "max": float(stats.act_max[f]), "dead": count == 0, "dense": float(stats.frequency[f]) > dense_threshold,
        "group": None, "target": None, "group_freq": None,
        "top": top, "bands": bands, "hist": {"range": rng, "counts": hist.tolist()},
    }
    if groups is not None:
        k = int(groups.group[f])
        page.update(group=k, target=groups.targets[k], group_freq=group_freq[k] if group_freq else None)
    if effects is not None:
        page["logits"] = {
            "pos": [[strings(int(t)), round(float(v), 3)] for t, v in zip(effects.top_ids[f], effects.top_values[f])],
            "neg": [[strings(int(t)), round(float(v), 3)] for t, v in zip(effects.bottom_ids[f], effects.bottom_values[f])],
        }
    if nearest is not None:
        page["nearest"] = [
            [int(i), round(float(s), 4), _top_tokens(stats, int(i), strings, 2), with_pages is None or int(i) in with_pages]
            for i, s in zip(nearest[0][f], nearest[1][f])
        ]
    page["vocab"] = vocab.list
    return page
