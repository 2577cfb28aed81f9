"""The paper's data model: X = H V with s-sparse non-negative H and Gaussian unit-norm V.

Chen et al. (arXiv:2506.14002): n monosemantic features v_i in R^d (n > d: superposition), each
sample a sum of s of them with non-negative coefficients, s drawn per sample (the imbalanced toy:
half the samples s = 3, half s = 20, n = 128, d = 42), features chosen uniformly so every feature
has frequency f = E[s] / n.

The dictionary is SAELens's ``FeatureDictionary`` (random unit Gaussian rows, no bias, no
orthogonalisation) and the generator exposes ``sample(batch_size)`` like SAELens's
``ActivationGenerator``, so SAELens's ``eval_sae_on_synthetic_data`` (MCC, F1, L0, explained
variance, dead latents) runs on it unchanged. SAELens's own generators draw each feature
independently with its own firing probability; the paper's model fixes the number of active
features per sample instead, which is why this one is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from sae_lens.synthetic import FeatureDictionary
from torch import nn

Coefficients = Literal["constant", "uniform", "lognormal"]


@dataclass
class SparseMixtureConfig:
    """The paper's synthetic model."""

    n_features: int = 128
    """n, the number of true features (rows of V)."""
    d: int = 42
    """d, the activation dimension."""
    sparsities: tuple[int, ...] = (3, 20)
    """Possible numbers s of active features per sample."""
    sparsity_weights: tuple[float, ...] = (0.5, 0.5)
    """Probability of each entry of ``sparsities``."""
    coefficients: Coefficients = "constant"
    """Non-zero coefficients: constant 1, Uniform[0.5, 1.5], or log-normal (median 1, sigma 0.5)."""
    noise_std: float = 0.0
    """Std of isotropic Gaussian noise added to each sample (a stress option; 0 in the paper)."""
    seed: int = 0
    """Seed of the dictionary V."""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean_sparsity(self) -> float:
        w = torch.tensor(self.sparsity_weights, dtype=torch.float64)
        return float((torch.tensor(self.sparsities, dtype=torch.float64) * w / w.sum()).sum())

    @property
    def feature_frequency(self) -> float:
        """f = E[s] / n, the occurrence frequency of every feature."""
        return self.mean_sparsity / self.n_features


class SparseCoefficientGenerator(nn.Module):
    """Samples H: per row, s features chosen uniformly without replacement, coefficients >= 0."""

    def __init__(self, cfg: SparseMixtureConfig):
        super().__init__()
        if len(cfg.sparsities) != len(cfg.sparsity_weights):
            raise ValueError("sparsities and sparsity_weights must have the same length")
        if max(cfg.sparsities) > cfg.n_features or min(cfg.sparsities) < 1:
            raise ValueError(f"each s must be in [1, n_features={cfg.n_features}], got {cfg.sparsities}")
        self.cfg = cfg
        self.num_features = cfg.n_features
        self.register_buffer("s_values", torch.tensor(cfg.sparsities, dtype=torch.long))
        self.register_buffer("s_probs", torch.tensor(cfg.sparsity_weights, dtype=torch.float32))

    @torch.no_grad()
    def sample(self, batch_size: int) -> Float[torch.Tensor, "batch n_features"]:
        cfg = self.cfg
        device = self.s_values.device
        s = self.s_values[torch.multinomial(self.s_probs, batch_size, replacement=True)]
        s_max = int(self.s_values.max())
        # s_max distinct uniform features per row: the top-s_max of i.i.d. uniforms.
        idx = torch.rand(batch_size, cfg.n_features, device=device).topk(s_max, dim=-1).indices
        keep = torch.arange(s_max, device=device)[None, :] < s[:, None]
        if cfg.coefficients == "constant":
            values = torch.ones(batch_size, s_max, device=device)
        elif cfg.coefficients == "uniform":
            values = 0.5 + torch.rand(batch_size, s_max, device=device)
        elif cfg.coefficients == "lognormal":
            values = torch.exp(0.5 * torch.randn(batch_size, s_max, device=device))
        else:
            raise ValueError(f"unknown coefficient distribution {cfg.coefficients!r}")
        h = torch.zeros(batch_size, cfg.n_features, device=device)
        h.scatter_(1, idx, values * keep)
        return h

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.sample(batch_size)


class SparseMixtureModel(nn.Module):
    """X = H V (+ noise), with ``feature_dict`` and ``activation_generator`` as in SAELens."""

    def __init__(self, cfg: SparseMixtureConfig, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        # Gaussian V with unit-norm rows, as in the theory (no orthogonalisation, no bias).
        self.feature_dict = FeatureDictionary(
            cfg.n_features, cfg.d, bias=False, initializer=None, device=device, seed=cfg.seed
        )
        self.feature_dict.requires_grad_(False)
        self.activation_generator = SparseCoefficientGenerator(cfg).to(device)

    @property
    def feature_vectors(self) -> Float[torch.Tensor, "n_features d"]:
        return self.feature_dict.feature_vectors

    @torch.no_grad()
    def sample_with_features(
        self, batch_size: int
    ) -> tuple[Float[torch.Tensor, "batch d"], Float[torch.Tensor, "batch n_features"]]:
        h = self.activation_generator.sample(batch_size)
        x = self.feature_dict(h)
        if self.cfg.noise_std > 0:
            x = x + self.cfg.noise_std * torch.randn_like(x)
        return x, h

    @torch.no_grad()
    def sample(self, batch_size: int) -> Float[torch.Tensor, "batch d"]:
        return self.sample_with_features(batch_size)[0]

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.sample(batch_size)


def small_model_config(seed: int = 0) -> SparseMixtureConfig:
    """A small instance of the paper's model with more latents (128 in its tests) than features:
    n = 48 features in d = 24 (superposition, d > sqrt(n)), s = 2 per sample (f = 0.042)."""
    return SparseMixtureConfig(n_features=48, d=24, sparsities=(2,), sparsity_weights=(1.0,), seed=seed)


def paper_toy(seed: int = 0, **overrides: object) -> SparseMixtureModel:
    """The paper's imbalanced toy: n = 128, d = 42, half the samples s = 3, half s = 20."""
    cfg = SparseMixtureConfig(n_features=128, d=42, sparsities=(3, 20), sparsity_weights=(0.5, 0.5), seed=seed)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return SparseMixtureModel(cfg)
