"""The paper's metrics, next to SAELens's synthetic evals.

- FRR(tau): share of true features v_i with max_m cos(w_m, v_i) >= tau (the paper's recovery rate).
- Cross-seed consistency: for each neuron of SAE A, the max cosine to any neuron of SAE B; the
  share above 0.9 among A's top-alpha most active neurons.
- MCC, F1, L0, explained variance, dead latents: SAELens's ``eval_sae_on_synthetic_data``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from sae_lens.synthetic import eval_sae_on_synthetic_data


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def max_cosines(
    learned: Float[torch.Tensor, "m d"], reference: Float[torch.Tensor, "n d"], chunk: int = 4096
) -> Float[torch.Tensor, " n"]:
    """For each reference row, the largest cosine to any learned row (memory-bounded)."""
    a = _unit_rows(learned.detach().float())
    best = torch.full((reference.shape[0],), -1.0, device=a.device)
    b = _unit_rows(reference.detach().float().to(a.device))
    for start in range(0, a.shape[0], chunk):
        best = torch.maximum(best, (b @ a[start : start + chunk].T).max(dim=1).values)
    return best


def feature_recovery_rate(
    learned: Float[torch.Tensor, "m d"], true_features: Float[torch.Tensor, "n d"], tau: float
) -> float:
    """FRR(tau): fraction of true features with a learned direction at cosine >= tau."""
    return (max_cosines(learned, true_features) >= tau).float().mean().item()


def cross_seed_consistency(
    directions_a: Float[torch.Tensor, "m d"],
    directions_b: Float[torch.Tensor, "m2 d"],
    frequency_a: Float[torch.Tensor, " m"] | None = None,
    alpha: float = 1.0,
    threshold: float = 0.9,
) -> float:
    """Share of A's top-alpha most active neurons whose best match in B has cosine > threshold."""
    mcs = max_cosines(directions_b, directions_a)
    if frequency_a is not None and alpha < 1.0:
        k = max(1, int(round(alpha * directions_a.shape[0])))
        mcs = mcs[frequency_a.topk(k).indices.to(mcs.device)]
    return (mcs > threshold).float().mean().item()


@dataclass
class RecoveryResult:
    frr_08: float
    frr_09: float
    mcc: float
    f1: float
    l0: float
    true_l0: float
    explained_variance: float
    nmse: float
    dead_fraction: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate_on_synthetic(
    sae: Any, model: Any, n_samples: int = 20_000, batch_size: int = 5_000, seed: int = 12345
) -> RecoveryResult:
    """All metrics of an SAE against a synthetic model with known features (V rows)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        res = eval_sae_on_synthetic_data(
            sae, model.feature_dict, model.activation_generator, num_samples=n_samples, batch_size=batch_size
        )
    true_v = model.feature_dict.feature_vectors
    return RecoveryResult(
        frr_08=feature_recovery_rate(sae.W_dec, true_v, 0.8),
        frr_09=feature_recovery_rate(sae.W_dec, true_v, 0.9),
        mcc=res.mcc,
        f1=res.classification.f1_score,
        l0=res.sae_l0,
        true_l0=res.true_l0,
        explained_variance=res.explained_variance,
        nmse=1.0 - res.explained_variance,
        dead_fraction=res.dead_latents / sae.cfg.d_sae,
    )

