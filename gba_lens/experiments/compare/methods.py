"""The compared methods, each SAELens's own training class at its documented defaults, and their
sparsity sweeps.

Every method has one sparsity knob; the comparison trains each over a few values of it so that a
method is a curve (a metric against L0), not one point:

- ``batchtopk``, ``topk``, ``matryoshka`` (Matryoshka BatchTopK): ``k``, the L0 asked for.
- ``matching_pursuit``: ``max_iterations``, the most latents one input may select.
- ``jumprelu`` (``l0_coefficient``) and ``l1`` (``l1_coefficient``): a penalty whose L0 is only
  known after training. A geometric grid is trained and extended (see :func:`extend_grid`) until
  the measured L0s bracket the L0 range asked for.
- ``gba_defaults``: GBA at its defaults, which find the targets' level from the data (``find_l0``
  and valley thresholds): one point, no sweep, compared with every frontier at its own L0.
- ``gba``: GBA has no penalty and no k. Its L0 follows its firing targets (K = 10 groups with
  targets geometric from ``highest_target`` to ``lowest_target``): the rule lowers a neuron's
  bias only while it fires above its group's target, so the mean target bounds the firing rate.
  The knob swept is a common factor on both ends of the target range (1 = the library's range
  0.1 ... 1e-3), under the paper's rule (fixed targets: ``find_l0=False``, which GBA's defaults
  turn on to find the level from the data instead); every other setting stays at its default.

Why not :func:`gba_lens.training.methods.build_sae` for all: it does not build Matryoshka or
MatchingPursuit SAEs, so those two are built here from SAELens's classes directly.
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from sae_lens import SAE
from sae_lens import TrainingSAE

from gba_lens.experiments.gba_modes import PAPER_RULE
from gba_lens.training.methods import build_sae
from gba_lens.training.train import TrainConfig, train_sae

#: Display name of every method.
LABELS: dict[str, str] = {
    "gba_defaults": "GBA (defaults)",
    "gba": "GBA, paper's rule",
    "topk": "TopK",
    "batchtopk": "BatchTopK",
    "matryoshka": "Matryoshka BatchTopK",
    "jumprelu": "JumpReLU",
    "l1": "L1 (standard)",
    "matching_pursuit": "MatchingPursuit",
}
ALL_METHODS: tuple[str, ...] = tuple(LABELS)
#: The knob each method is swept over (the x of its sweep, before L0 is measured).
KNOBS: dict[str, str] = {
    "gba_defaults": "none",
    "gba": "target_scale",
    "topk": "k",
    "batchtopk": "k",
    "matryoshka": "k",
    "jumprelu": "l0_coefficient",
    "l1": "l1_coefficient",
    "matching_pursuit": "max_iterations",
}
#: Methods whose L0 is set directly by the knob.
L0_KNOB_METHODS = ("topk", "batchtopk", "matryoshka", "matching_pursuit")
#: Methods whose knob is a penalty coefficient (L0 known only after training).
PENALTY_METHODS = ("jumprelu", "l1")
GBA_DEFAULT_RANGE = (0.1, 1e-3)


@dataclass(frozen=True)
class Variant:
    """One point of one method's sweep: the method, its knob value and any fixed parameters."""

    method: str
    knob: float
    params: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def label(self) -> str:
        return LABELS[self.method]

    @property
    def key(self) -> str:
        return f"{self.method}@{self.knob:.6g}"


def matryoshka_widths(width: int) -> list[int]:
    """Nested prefix widths W/32, W/8, W/2, W (four levels, each 4x the last, as in the
    Matryoshka SAE paper's geometric levels); levels under 2 latents are dropped."""
    widths = [w for w in (width // 32, width // 8, width // 2) if w >= 2]
    return sorted(set(widths)) + [width]


def sae_params(variant: Variant, width: int) -> dict[str, Any]:
    """The SAELens config parameters of a sweep point (defaults for everything else)."""
    m, v = variant.method, variant.knob
    params: dict[str, Any] = dict(variant.params)
    if m == "gba_defaults":  # nothing set: the knob means nothing
        pass
    elif m == "gba":  # the knob scales the default range; a range given in the variant's params wins
        params = {"highest_target": min(1.0, GBA_DEFAULT_RANGE[0] * v), "lowest_target": GBA_DEFAULT_RANGE[1] * v,
                  **params}
    elif m == "topk":
        params |= {"k": max(1, int(round(v)))}
    elif m in ("batchtopk", "matryoshka"):
        params |= {"k": float(v)}
        if m == "matryoshka":
            params |= {"matryoshka_widths": matryoshka_widths(width)}
    elif m == "matching_pursuit":
        params |= {"max_iterations": max(1, int(round(v)))}
    elif m == "jumprelu":
        params |= {"l0_coefficient": float(v)}
    elif m == "l1":
        params |= {"l1_coefficient": float(v)}
    else:
        raise ValueError(f"unknown method {m!r}; choose from {ALL_METHODS}")
    return params


def build(variant: Variant, d_in: int, width: int, device: str) -> TrainingSAE[Any]:
    """A fresh SAELens training SAE for a sweep point."""
    params = sae_params(variant, width)
    if variant.method == "matryoshka":
        from sae_lens import MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig

        return MatryoshkaBatchTopKTrainingSAE(
            MatryoshkaBatchTopKTrainingSAEConfig(d_in=d_in, d_sae=width, device=device, **params))
    if variant.method == "matching_pursuit":
        from sae_lens import MatchingPursuitTrainingSAE, MatchingPursuitTrainingSAEConfig

        return MatchingPursuitTrainingSAE(
            MatchingPursuitTrainingSAEConfig(d_in=d_in, d_sae=width, device=device, **params))
    return build_sae("gba" if variant.method == "gba_defaults" else variant.method, d_in, width, device=device,
                     **params)


def to_inference(sae: TrainingSAE[Any], hook_name: str | None = None) -> SAE[Any]:
    """The SAE as deployed: SAELens's own training -> inference conversion (BatchTopK and
    Matryoshka become JumpReLU SAEs with their learned threshold, GBA a JumpReLU SAE), loaded back
    with ``SAE.load_from_disk``. Every method is scored in this form."""
    if hook_name is not None:
        sae.cfg.metadata.hook_name = hook_name
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp, device=str(sae.W_dec.device))


def l0_knob_sweep(method: str, l0s: Sequence[float]) -> list[Variant]:
    """k (or max_iterations) at each L0 asked for."""
    if method == "topk" or method == "matching_pursuit":
        values = sorted({max(1, int(round(v))) for v in l0s})
        return [Variant(method, float(v)) for v in values]
    return [Variant(method, float(v)) for v in l0s]


def defaults_point() -> list[Variant]:
    """GBA at its defaults: one point (its L0 is found, not swept)."""
    return [Variant("gba_defaults", 1.0)]


def gba_sweep(scales: Sequence[float]) -> list[Variant]:
    """The paper's rule at each scale of its range (its L0 follows the range; GBA's defaults find
    the level from the data instead, so a sweep of them would be one point)."""
    return [Variant("gba", float(s), tuple(PAPER_RULE.items())) for s in scales]


def penalty_sweep(method: str, coefficients: Sequence[float]) -> list[Variant]:
    return [Variant(method, float(c)) for c in sorted(coefficients)]


def extend_grid(coefficients: Sequence[float], measured_l0: Sequence[float], l0_low: float, l0_high: float,
                factor: float = 3.0) -> float | None:
    """The next penalty coefficient to try so that the measured L0s span [l0_low, l0_high], or
    None when they already do or when the last step stopped moving L0. L0 falls as the coefficient grows, so a grid whose smallest L0 is
    still above ``l0_low`` gets a larger coefficient, and one whose largest L0 is below ``l0_high``
    a smaller one."""
    pairs = sorted(zip(coefficients, measured_l0))
    if min(l for _, l in pairs) > l0_low:
        # Saturated: the last step up moved L0 by < 10% (a JumpReLU threshold learns at most about
        # the learning rate per step, so a short run cannot reach a low L0 at any coefficient).
        if len(pairs) > 1 and pairs[-1][1] > 0.9 * pairs[-2][1]:
            return None
        return pairs[-1][0] * factor
    if max(l for _, l in pairs) < l0_high:
        if len(pairs) > 1 and pairs[0][1] < 1.1 * pairs[1][1]:
            return None
        return pairs[0][0] / factor
    return None


def nearest_to_l0(points: Sequence[dict[str, Any]], l0: float) -> dict[str, Any]:
    """The sweep point whose measured L0 is closest to ``l0`` (in log space)."""
    return min(points, key=lambda p: abs(math.log(max(p["l0"], 1e-6) / l0)))


def interpolate_at_l0(points: Sequence[dict[str, Any]], metric: str, l0: float, log_l0: bool = True) -> float | None:
    """``metric`` linearly interpolated in log L0 (``log_l0=False``: in L0) at ``l0``; None when
    ``l0`` is outside the points' L0 range."""
    pts = sorted((p["l0"], p[metric]) for p in points if p.get(metric) is not None and p["l0"] > 0)
    axis = math.log if log_l0 else float
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= l0 <= x1:
            if x1 == x0:
                return (y0 + y1) / 2
            t = (axis(l0) - axis(x0)) / (axis(x1) - axis(x0))
            return y0 + t * (y1 - y0)
    return None


@contextlib.contextmanager
def quiet_trainer() -> Iterator[None]:
    """Silence SAELens's per-run "Training SAE" bar and its warnings; the comparison draws one bar
    over all runs. (SAETrainer.fit has no switch for its bar, so the module's tqdm is wrapped.)"""
    from gba_lens.compat import sae_trainer_module as sae_trainer

    original = sae_trainer.tqdm
    sae_trainer.tqdm = functools.partial(original, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sae_trainer.tqdm = original


class TrainedVariant(NamedTuple):
    sae: TrainingSAE[Any]
    seconds: float
    """Training time."""
    l0_note: str | None
    """A GBA run's end-of-training line when its L0 had not settled (``GBATrainer.unsettled_l0``), which
    :func:`quiet_trainer` keeps from being a warning mid-comparison; None otherwise and for other methods."""


def train_variant(variant: Variant, data: Iterator[torch.Tensor], d_in: int, width: int, train: TrainConfig,
                  seed: int, hook_name: str | None = None) -> TrainedVariant:
    """Build (seeded) and train one sweep point (for ``hook_name``, set in its metadata before training, as
    SAELens's runners do: GBA's refit reads it)."""
    torch.manual_seed(seed)
    sae = build(variant, d_in, width, train.device)
    if hook_name is not None:
        sae.cfg.metadata.hook_name = hook_name
    start = time.perf_counter()
    with quiet_trainer():
        trainer = train_sae(sae, data, train)
    seconds = time.perf_counter() - start
    unsettled = getattr(trainer, "unsettled_l0", None)
    return TrainedVariant(sae, seconds, unsettled() if unsettled is not None else None)
