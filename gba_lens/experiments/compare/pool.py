"""SynthSAEBench-structured models from SAELens's generator, and their sample pools cached on disk.

SAELens's generator with hierarchy and low-rank correlation draws only thousands of samples per
second on a CPU, slower than the small SAEs train. So the samples are drawn once into a pool
(``train`` hidden activations plus a held-out ``eval`` set kept as sparse true-feature
activations), saved under a directory named by a hash of everything that defines them, and every
method and seed trains on the same pool (each seed in its own shuffled order). The SyntheticModel
itself is saved beside it with SAELens's ``save`` (building it orthogonalises the dictionary,
which takes seconds) and loaded back with ``load_from_disk``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

POOL_VERSION = 1


@dataclass(frozen=True)
class SynthScale:
    """Size of a SynthSAEBench-structured model and of its training budget.

    The structure is SynthSAEBench-16k's at every scale: Zipfian firing (exponent 0.5, 0.4 down to
    5e-4), a hierarchy of ``roots`` trees with branching 4 and depth 3 (mutually exclusive
    children, compensated probabilities, children scaled by their parent), low-rank correlation
    (rank 25, scale 0.1), mean magnitudes linear 5 -> 4 with folded-normal spread (0.5, 0.5), an
    orthogonalised dictionary and bias 0.5. What scales: the number of features, d, the width
    and the roots, all by the same factor, so features / d (21), features / width (4) and the
    share of features in the hierarchy (2/3) stay those of the 16k model.
    """

    name: str
    num_features: int
    hidden_dim: int
    width: int
    roots: int
    samples: int
    """Training samples per SAE."""
    pool_samples: int | None
    """Samples drawn once and shared by every run (None: stream from the generator, for GPUs)."""
    eval_samples: int
    batch_size: int = 1024
    lr: float = 3e-3
    lr_decay_fraction: float = 0.3
    """Linear learning-rate decay over this last fraction of the steps."""
    branching: int = 4
    depth: int = 3
    correlation_rank: int = 25
    orthogonalization_steps: int = 200


#: 1/16 of the 16k model: 1,024 features, d 48, width 256, 8 roots (680 hierarchical features).
#: An SAE step here takes 5-10 ms on one core (more when the core is shared), so one run of 750k
#: samples takes 5-10 s of CPU; the generator (~25k samples/s on an idle core) draws the 3M pool
#: in ~2 minutes once, and each seed trains on its own shuffled quarter of it.
DEFAULT_SCALE = SynthScale("synthbench-1k (1/16 of 16k)", 1024, 48, 256, 8, samples=750_000,
                           pool_samples=3_000_000, eval_samples=20_000)
#: For CI: 1/64 of the 16k model.
QUICK_SCALE = SynthScale("synthbench-256 (quick)", 256, 12, 64, 2, samples=100_000, pool_samples=100_000,
                         eval_samples=5_000, batch_size=512, orthogonalization_steps=50)
#: SynthSAEBench-16k itself: 200M samples at lr 3e-4, streamed from the generator (no pool).
FULL_16K_SCALE = SynthScale("SynthSAEBench-16k", 16_384, 768, 4096, 128, samples=200_000_000, pool_samples=None,
                            eval_samples=100_000, batch_size=1024, lr=3e-4, lr_decay_fraction=0.0)


def model_config(scale: SynthScale, seed: int = 0) -> Any:
    """SAELens ``SyntheticModelConfig`` with SynthSAEBench-16k's structure at ``scale``."""
    from sae_lens.synthetic import (
        FoldedNormalMagnitudeConfig,
        HierarchyConfig,
        LinearMagnitudeConfig,
        LowRankCorrelationConfig,
        OrthogonalizationConfig,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
    )

    return SyntheticModelConfig(
        num_features=scale.num_features,
        hidden_dim=scale.hidden_dim,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=5e-4),
        hierarchy=HierarchyConfig(total_root_nodes=scale.roots, branching_factor=scale.branching,
                                  max_depth=scale.depth, mutually_exclusive_portion=1.0,
                                  compensate_probabilities=True, scale_children_by_parent=True),
        correlation=LowRankCorrelationConfig(rank=scale.correlation_rank, correlation_scale=0.1),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        orthogonalization=OrthogonalizationConfig(num_steps=scale.orthogonalization_steps),
        bias=0.5,
        seed=seed,
    )


def pool_key(scale: SynthScale, model_seed: int) -> str:
    """Hash of what defines a pool: the model config, the pool sizes and this code's version."""
    blob = json.dumps({"model": model_config(scale, model_seed).to_dict(), "pool": scale.pool_samples,
                       "eval": scale.eval_samples, "version": POOL_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class SamplePool:
    """A synthetic model, its training samples (or None: stream) and a held-out evaluation set."""

    model: Any
    train: Float[torch.Tensor, "n d"] | None
    eval_features: torch.Tensor
    """[n_eval, num_features] true feature activations (a sparse COO tensor)."""
    directory: Path | None
    from_cache: bool
    generator_samples_per_s: float
    true_l0: float

    def replay(self) -> EvalReplay:
        return EvalReplay(self.eval_features)


class EvalReplay:
    """Stands in for the model's ``ActivationGenerator`` in SAELens's ``eval_sae_on_synthetic_data``:
    ``sample(n)`` returns the next ``n`` stored held-out rows, so every SAE is scored on the same
    samples without drawing them again."""

    def __init__(self, features: torch.Tensor):
        self.features = features.coalesce() if features.is_sparse else features
        self.position = 0

    def sample(self, batch_size: int) -> torch.Tensor:
        end = self.position + batch_size
        if end > self.features.shape[0]:
            raise ValueError(f"the pool holds {self.features.shape[0]} evaluation samples, {end} asked for")
        rows = self.features.index_select(0, torch.arange(self.position, end, device=self.features.device))
        self.position = end
        return rows.to_dense() if rows.is_sparse else rows


def _draw(model: Any, n: int, chunk: int, desc: str, features: bool) -> tuple[torch.Tensor, float]:
    out, seconds = [], 0.0
    for start in tqdm(range(0, n, chunk), desc=desc, leave=False):
        t0 = time.perf_counter()
        with torch.no_grad():
            acts = model.activation_generator.sample(min(chunk, n - start))
            out.append(acts.to_sparse() if features else model.feature_dict(acts))
        seconds += time.perf_counter() - t0
    return torch.cat(out), n / max(seconds, 1e-9)


def load_or_build_pool(scale: SynthScale, cache_dir: str | Path | None, model_seed: int = 0,
                       device: str = "cpu", generation_seed: int = 1234) -> SamplePool:
    """The pool for ``scale`` from ``cache_dir/<hash>`` if there, else drawn and saved there."""
    from sae_lens.synthetic import SyntheticModel

    directory = Path(cache_dir) / f"synthbench-{pool_key(scale, model_seed)}" if cache_dir is not None else None
    if directory is not None and (directory / "pool.safetensors").exists():
        model = SyntheticModel.load_from_disk(str(directory / "model"), device=device)
        tensors = load_file(str(directory / "pool.safetensors"), device=device)
        meta = json.loads((directory / "pool.json").read_text())
        eval_features = torch.sparse_coo_tensor(tensors["eval_indices"].long(), tensors["eval_values"],
                                                size=(scale.eval_samples, scale.num_features))
        return SamplePool(model, tensors.get("train"), eval_features, directory, True,
                          meta["generator_samples_per_s"], meta["true_l0"])
    model = _quiet_build(model_config(scale, model_seed), device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generation_seed)
        eval_features, _ = _draw(model, scale.eval_samples, 4096, "held-out samples", features=True)
        train, rate = (None, 0.0)
        if scale.pool_samples:
            train, rate = _draw(model, scale.pool_samples, 1024, "sample pool", features=False)
        else:  # still measure the generator
            _, rate = _draw(model, 8 * scale.batch_size, scale.batch_size, "generator throughput", features=False)
    eval_features = eval_features.coalesce()
    true_l0 = eval_features.indices().shape[1] / scale.eval_samples
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        model.save(str(directory / "model"))
        tensors = {"eval_indices": eval_features.indices().int().contiguous(),
                   "eval_values": eval_features.values().contiguous()}
        if train is not None:
            tensors["train"] = train.contiguous()
        save_file({k: v.cpu() for k, v in tensors.items()}, str(directory / "pool.safetensors"))
        (directory / "pool.json").write_text(json.dumps(
            {"scale": asdict(scale), "model_seed": model_seed, "generator_samples_per_s": rate,
             "true_l0": true_l0, "model_config": model.cfg.to_dict()}, indent=2, default=str))
    return SamplePool(model, train, eval_features, directory, False, rate, true_l0)


def _quiet_build(cfg: Any, device: str) -> Any:
    """Build a SyntheticModel without its orthogonalisation progress bar on the terminal."""
    import contextlib
    import io

    from sae_lens.synthetic import SyntheticModel

    with contextlib.redirect_stderr(io.StringIO()):
        return SyntheticModel(cfg, device=device)


def top_width_l0(eval_features: torch.Tensor, width: int) -> float:
    """Mean L0 of the ``width`` most frequent true features on the held-out samples (SynthSAEBench
    reports L0 25 of 34 for the top 4,096): the most an SAE of that width can recover."""
    feats = eval_features.coalesce()
    counts = torch.bincount(feats.indices()[1], minlength=feats.shape[1]).float()
    return float(counts.sort(descending=True).values[:width].sum() / feats.shape[0])
