"""The resonance sweep: single-group BA with its target p swept against the dimension d, on the
paper's model with one sparsity, scored by FRR at tau 0.9 (a heatmap over (d, p)).

    gba-lens recover --preset resonance
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from gba_lens.experiments import runner
from gba_lens.experiments.report import pyplot, save_figure
from gba_lens.experiments.runner import Job
from gba_lens.experiments.runs import MethodSpec
from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel
from gba_lens.training.train import TrainConfig


@dataclass
class ResonanceSetup:
    """Single-group BA, target p swept against d, on the paper's model with uniform s."""

    n_features: int = 256
    sparsity: int = 4
    dims: tuple[int, ...] = (6, 12, 24, 48, 96)
    targets: tuple[float, ...] = (0.004, 0.008, 0.016, 0.031, 0.0625, 0.125, 0.25)
    width: int = 512
    samples: int = 200_000
    batch_size: int = 512
    lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"


@dataclass
class ResonanceResult:
    """FRR at tau 0.9 on the (d, p) grid, with the feature frequency f = s / n."""

    setup: ResonanceSetup
    f: float
    sqrt_n: float
    frr_09: list[list[float]]
    """``frr_09[i][j]``: FRR of d = ``setup.dims[i]`` and p = ``setup.targets[j]``."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``resonance.json``)."""
        return {"setup": asdict(self.setup), "f": self.f, "sqrt_n": self.sqrt_n, "frr_09": self.frr_09}

    def rows(self) -> list[dict[str, Any]]:
        """One table row per d, one column per target (see :meth:`columns`)."""
        return [{"method": f"d={d}", **{f"p={p:g}": v for p, v in zip(self.setup.targets, r)}}
                for d, r in zip(self.setup.dims, self.frr_09)]

    def columns(self) -> list[tuple[str, str]]:
        return [("method", "d")] + [(f"p={p:g}", f"p={p:g}") for p in self.setup.targets]


def run_resonance_sweep(setup: ResonanceSetup | None = None, progress: bool = True,
                        workers: int | None = None) -> ResonanceResult:
    setup = setup or ResonanceSetup()
    train = TrainConfig(total_samples=setup.samples, batch_size=setup.batch_size, lr=setup.lr,
                        device=setup.device)
    cells = list(itertools.product(range(len(setup.dims)), range(len(setup.targets))))
    jobs = [
        Job(MethodSpec("BA", "ba", {"target": setup.targets[j]}), SparseMixtureModel,
            (SparseMixtureConfig(n_features=setup.n_features, d=setup.dims[i], sparsities=(setup.sparsity,),
                                 sparsity_weights=(1.0,), seed=setup.seed), setup.device),
            setup.width, train, setup.seed, eval_samples=5_000)
        for i, j in cells
    ]
    grid = torch.zeros(len(setup.dims), len(setup.targets))
    for (i, j), rec in zip(cells, runner.run_jobs(jobs, workers, desc="resonance sweep", progress=progress)):
        grid[i, j] = rec.result.frr_09
    return ResonanceResult(setup, f=setup.sparsity / setup.n_features, sqrt_n=setup.n_features ** 0.5,
                           frr_09=grid.tolist())


def plot_resonance(result: ResonanceResult, path: Path) -> None:
    plt = pyplot()
    setup, grid = result.setup, torch.tensor(result.frr_09)
    fig, ax = plt.subplots(figsize=(7, 4))
    im = ax.imshow(grid.numpy(), origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(setup.targets)), [f"{t:g}" for t in setup.targets], rotation=45)
    ax.set_yticks(range(len(setup.dims)), [str(d) for d in setup.dims])
    ax.set_xlabel(f"BA target frequency p   (feature frequency f = {result.f:.3g})")
    ax.set_ylabel(f"d   (sqrt(n) = {result.sqrt_n:.0f})")
    f_pos = float(torch.tensor(setup.targets).log().sub(torch.tensor(result.f).log()).abs().argmin())
    ax.axvline(f_pos, color="w", ls="--", lw=1)
    for (i, j), v in zip(itertools.product(range(grid.shape[0]), range(grid.shape[1])), grid.flatten().tolist()):
        ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=7)
    fig.colorbar(im, ax=ax, label="FRR (τ = 0.9)")
    ax.set_title(f"Resonance: single-group BA, n = {setup.n_features}, s = {setup.sparsity}")
    save_figure(fig, path)
