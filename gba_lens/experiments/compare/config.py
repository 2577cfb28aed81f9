"""What ``gba-lens compare`` runs: one dataclass whose field docstrings are the CLI's --help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Preset = Literal["synthbench", "lm"]
PRESETS: tuple[str, ...] = ("synthbench", "lm")


@dataclass
class CompareConfig:
    """Compare GBA with SAELens's BatchTopK, Matryoshka BatchTopK, JumpReLU, L1 (and TopK / MatchingPursuit) on a SynthSAEBench-structured ground truth (synthbench) or a language model's sparsity-fidelity frontier (lm)."""

    preset: Preset = "synthbench"
    """synthbench: SAELens's synthetic generator with SynthSAEBench-16k's structure, scored against the true features (MCC, F1, ...). lm: SAEs on cached LM activations at a residual and an MLP-out hook, scored on held-out tokens (CE loss recovered, KL, explained variance)."""
    quick: bool = False
    """A small, fast variant (CI): fewer samples, methods and sweep points, one seed."""
    full_16k: bool = False
    """synthbench only: the full SynthSAEBench-16k configuration (16,384 features, d 768, width 4,096, 200M samples, lr 3e-4); meant for a GPU."""
    seeds: list[int] = field(default_factory=list)
    """SAE / sample-stream seeds (default: 0 1 2 for synthbench, 0 for lm, 0 with --quick)."""
    methods: list[str] = field(default_factory=list)
    """Methods to run (default: all of gba_defaults gba batchtopk matryoshka jumprelu l1 matching_pursuit for synthbench; gba_defaults gba topk batchtopk matryoshka jumprelu l1 for lm). gba_defaults: GBA at its defaults (one point); gba: the paper's rule, its target range scaled."""
    out: str = "runs/compare"
    """Output directory: compare_<preset>.md/.json/.png and the caches (the synthbench sample pool, the LM activations)."""
    cache_dir: str | None = None
    """Where sample pools / activation caches live (default: OUT/cache). A pool is keyed by a hash of its configuration and reused."""
    device: str = "auto"
    """Torch device (auto: cuda if available, else cpu)."""
    samples: int | None = None
    """Training samples (activation vectors) per SAE (default: the preset's)."""
    lr: float | None = None
    """Adam learning rate for every method (default: the preset's)."""
    model: str | None = None
    """lm only: TransformerLens model name or local directory (default: the offline stdlib LM)."""
    dataset: str | None = None
    """lm only: dataset (name or local data, as for gba-lens train; default: the stdlib corpus)."""
    hooks: list[str] = field(default_factory=list)
    """lm only: hook points (default: blocks.<n_layers // 2>.hook_resid_pre and blocks.<n_layers // 2>.hook_mlp_out)."""
    width: int | None = None
    """SAE width (default: the preset's: 256 synthbench, 4096 --full-16k, 4 x d_in lm, 2 x d_in lm --quick)."""
    wandb_project: str | None = None
    """Log the results table, the per-run metrics and the figure to this W&B project (offline-safe; failures never stop the run)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.full_16k and self.preset != "synthbench":
            raise ValueError("--full-16k applies to the synthbench preset only")
        if self.full_16k and self.quick:
            raise ValueError("--full-16k and --quick exclude each other")
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        if isinstance(self.hooks, str):
            self.hooks = [self.hooks]
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.width is not None and self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")

    def resolved_seeds(self) -> list[int]:
        if self.seeds:
            return list(self.seeds)
        return [0] if self.quick or self.preset == "lm" else [0, 1, 2]
