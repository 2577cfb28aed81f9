"""``gba-lens compare``: GBA against SAELens's architectures on a SynthSAEBench-structured ground
truth (``synthbench``) and on a language model's sparsity-fidelity frontier (``lm``)."""

from gba_lens.experiments.compare.config import CompareConfig
from gba_lens.experiments.compare.runner import run_compare

__all__ = ["CompareConfig", "run_compare"]
