"""GBA against SAELens's L1 and BatchTopK on SAELens ``SyntheticModel`` s with Zipfian firing
probabilities (same width, samples and learning-rate schedule for every method).

    gba-lens recover --preset zipf
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gba_lens.experiments import runner
from gba_lens.experiments.gba_modes import PAPER_RULE
from gba_lens.experiments.paper_toy import PAPER_TOPK
from gba_lens.experiments.report import pyplot, save_figure
from gba_lens.experiments.results import MethodSummary, by_role, summarise
from gba_lens.experiments.runner import Job
from gba_lens.experiments.runs import MethodSpec
from gba_lens.training.train import TrainConfig


@dataclass
class ZipfConfig:
    """One SAELens ``SyntheticModel`` with Zipfian firing probabilities."""

    name: str
    num_features: int
    hidden_dim: int
    width: int
    max_prob: float = 0.2
    min_prob: float = 0.002


ZIPF_CONFIGS = (
    ZipfConfig("A: 256 feats, d 32, width 256", 256, 32, 256),
    ZipfConfig("B: 512 feats, d 64, width 384 (< feats)", 512, 64, 384),
    ZipfConfig("C: 1024 feats, d 64, width 512 (< feats)", 1024, 64, 512),
)


def zipf_model(cfg: ZipfConfig, seed: int, device: str = "cpu") -> Any:
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    return SyntheticModel(
        SyntheticModelConfig(
            num_features=cfg.num_features,
            hidden_dim=cfg.hidden_dim,
            firing_probability=ZipfianFiringProbabilityConfig(max_prob=cfg.max_prob, min_prob=cfg.min_prob),
            seed=seed,
        ),
        device=device,
    )


def zipf_train_config(samples: int, batch_size: int = 1024, lr: float = 1e-2, decay_fraction: float = 0.3,
                      device: str = "cpu") -> TrainConfig:
    """The zipf preset's schedule, one for every method: lr 1e-2, linear decay over the last 30% of
    steps (it suited both GBA and L1 on model A)."""
    return TrainConfig(total_samples=samples, batch_size=batch_size, lr=lr,
                       lr_decay_steps=int(decay_fraction * samples / batch_size), device=device)


def zipf_top_width_l0(model: Any, width: int) -> float:
    """The L0 of the model's ``width`` most frequent features (the whole true L0 when ``width``
    covers every feature): what an SAE of that width can be asked to find."""
    probabilities = model.activation_generator.firing_probabilities
    return float(probabilities.sort(descending=True).values[:width].sum())


ZIPF_LOW_HTF = 0.03
"""Top target of the second GBA row (the paper's rule, fixed targets), below the paper's 0.1. Under a
Zipfian law few features fire as often as the paper's top targets, and the neurons of those groups
can end up on rare features; this row shows the paper's rule with its top groups moved down to
where the features are."""


def zipf_methods(true_l0: float, l1_coefficients: Sequence[float] = (0.1, 0.3, 1.0)) -> list[MethodSpec]:
    """GBA at its defaults (and the paper's rule with a lower top target) against SAELens's L1 (a
    small coefficient sweep) and BatchTopK (k = true L0, selection on the plain pre-activations)."""
    specs = [MethodSpec("GBA (defaults)", "gba", {}, role="gba"),
             MethodSpec(f"GBA, paper's rule (HTF {ZIPF_LOW_HTF:g})", "gba",
                        {"highest_target": ZIPF_LOW_HTF, **PAPER_RULE}, role="gba_low")]
    specs += [MethodSpec(f"L1 coef {c:g}", "l1", {"l1_coefficient": c}, role="l1") for c in l1_coefficients]
    # Selection on the plain pre-activations, as on the paper toy (PAPER_TOPK): SAELens's
    # decoder-norm rescaling would make BatchTopK's comparison depend on decoder norms.
    specs.append(MethodSpec(f"BatchTopK k={true_l0:.1f}", "batchtopk", {"k": float(true_l0), **PAPER_TOPK},
                            role="batchtopk"))
    return specs


@dataclass
class ZipfModelResult:
    """All rows of one Zipf model, and the rows its summary compares."""

    config: str
    rows: list[MethodSummary]
    gba: MethodSummary
    gba_low: MethodSummary
    l1: MethodSummary
    """The L1 coefficient with the highest MCC."""
    batchtopk: MethodSummary

    @classmethod
    def from_rows(cls, config: str, rows: list[MethodSummary]) -> ZipfModelResult:
        return cls(config, rows, gba=by_role(rows, "gba")[0], gba_low=by_role(rows, "gba_low")[0],
                   l1=max(by_role(rows, "l1"), key=lambda r: r.mcc.mean), batchtopk=by_role(rows, "batchtopk")[0])


def run_zipf_comparison(
    configs: Sequence[ZipfConfig] = ZIPF_CONFIGS,
    seeds: Sequence[int] = (0, 1, 2),
    samples: int = 1_000_000,
    batch_size: int = 1024,
    lr: float = 1e-2,
    decay_fraction: float = 0.3,
    l1_coefficients: Sequence[float] = (0.1, 0.3, 1.0),
    progress: bool = True,
    workers: int | None = None,
    device: str = "cpu",
) -> list[ZipfModelResult]:
    """MCC of GBA vs the best L1 and BatchTopK on each model (same width, samples, lr schedule).

    The schedule is :func:`zipf_train_config`'s.
    """
    train = zipf_train_config(samples, batch_size, lr, decay_fraction, device)
    table = []
    for zcfg in configs:
        jobs: list[Job] = []
        specs: list[MethodSpec] = []
        for seed in seeds:
            true_l0 = float(zipf_model(zcfg, seed).activation_generator.firing_probabilities.sum())
            specs = zipf_methods(true_l0, l1_coefficients)
            jobs += [Job(spec, zipf_model, (zcfg, seed, device), zcfg.width, train, seed, 20_000) for spec in specs]
        records = runner.run_jobs(jobs, workers, desc=zcfg.name, progress=progress)
        table.append(ZipfModelResult.from_rows(zcfg.name, summarise(records, specs)))
    return table


@dataclass
class ZipfSummary:
    """One model's line of the summary table (MCC of each compared row, L0 and EV)."""

    model: str
    seeds: int
    gba_mcc: float
    gba_mcc_std: float
    gba_low_mcc: float
    gba_low_mcc_std: float
    l1_mcc: float
    l1_mcc_std: float
    l1_best: str
    btk_mcc: float
    btk_mcc_std: float
    gba_l0: float
    true_l0: float
    gba_ev: float
    l1_ev: float
    btk_ev: float

    @classmethod
    def of(cls, result: ZipfModelResult) -> ZipfSummary:
        gba, low, l1, btk = result.gba, result.gba_low, result.l1, result.batchtopk
        return cls(model=result.config, seeds=gba.seeds,
                   gba_mcc=gba.mcc.mean, gba_mcc_std=gba.mcc.std, gba_low_mcc=low.mcc.mean, gba_low_mcc_std=low.mcc.std,
                   l1_mcc=l1.mcc.mean, l1_mcc_std=l1.mcc.std, l1_best=l1.method,
                   btk_mcc=btk.mcc.mean, btk_mcc_std=btk.mcc.std, gba_l0=gba.l0.mean, true_l0=gba.true_l0,
                   gba_ev=gba.explained_variance.mean, l1_ev=l1.explained_variance.mean,
                   btk_ev=btk.explained_variance.mean)

    def as_row(self) -> dict[str, Any]:
        """The table / JSON row (the model's name under ``method``, as in every table)."""
        row = {"method": self.model}
        row.update({k: v for k, v in vars(self).items() if k != "model"})
        return row


def zipf_summary_rows(table: Sequence[ZipfModelResult]) -> list[ZipfSummary]:
    return [ZipfSummary.of(entry) for entry in table]


ZIPF_COLUMNS = [
    ("method", "model"), ("gba_mcc", "GBA MCC"), ("gba_low_mcc", f"GBA paper's rule HTF {ZIPF_LOW_HTF:g} MCC"),
    ("l1_mcc", "best L1 MCC"), ("l1_best", "best L1"),
    ("btk_mcc", "BatchTopK MCC"), ("gba_l0", "GBA L0"), ("true_l0", "true L0"),
    ("gba_ev", "GBA EV"), ("l1_ev", "L1 EV"), ("btk_ev", "BTK EV"),
]

ZIPF_DETAIL_COLUMNS = [("method", "method"), ("mcc", "MCC"), ("l0", "L0"), ("explained_variance", "EV"),
                       ("dead_fraction", "dead")]
"""Columns of the per-model tables (every row of one model)."""


def plot_zipf(rows: Sequence[ZipfSummary], path: Path, title: str) -> None:
    """MCC per Zipf model: GBA at its defaults and with the lower top target, the best L1, BatchTopK."""
    plt = pyplot()
    series = [("gba_mcc", "GBA (defaults)"), ("gba_low_mcc", f"GBA, paper's rule, HTF {ZIPF_LOW_HTF:g}"), ("l1_mcc", "best L1"),
              ("btk_mcc", "BatchTopK")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for j, (key, name) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [getattr(r, key) for r in rows], width, yerr=[getattr(r, key + "_std") for r in rows], capsize=2,
               label=name)
    ax.set_xticks(range(len(rows)), [r.model.split(",")[0] for r in rows])
    ax.set_ylabel("MCC (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
