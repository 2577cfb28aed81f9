"""The IOI attribution check on small GBA SAEs: SAEs trained briefly on the offline IOI model's
activations at three hooks, and how much more ablating the features attribution ranks first lowers
the logit difference than ablating as many random active features, or as the features exact
ablation ranks first. The library's test
(``tests/circuits/test_circuit_ioi.py``) asks it of one SAE seed from random starts (the SAEs its bars
describe); ``scripts/ioi_attribution.py`` reads it over seeds and GBA settings
(docs/experiments/prior_free.md, thirty-second and thirty-third steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from jaxtyping import Float, Int

from gba_lens.circuits import ablate_features, ablation_sweep
from gba_lens.models.ioi_model import ioi_heldout_prompts
from gba_lens.training.methods import build_sae
from gba_lens.training.train import TrainConfig, train_sae

HOOKS = ("blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.1.hook_resid_pre")
"""The hooks the SAEs attach at."""
TRAIN_PROMPTS = 300
"""Prompts (clean and corrupted) whose activations the SAEs train on."""
STEPS = 300
"""Optimiser steps of 256 activations each."""
WIDTH = 128
"""Latents per SAE."""


def train_ioi_saes(model: Any, seed: int = 0, steps: int = STEPS, **gba_settings: Any) -> dict[str, Any]:
    """Inference SAEs (GBA, ``WIDTH`` latents, ``steps`` steps) per hook of :data:`HOOKS`, trained on
    the IOI model's activations of its training prompts; the SAE at hook i starts from
    ``torch.manual_seed(seed + i)``, and its batches follow a stream of their own."""
    train = ioi_heldout_prompts(model, "train", n_prompts=TRAIN_PROMPTS, seed=1)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.cat([train.clean_tokens, train.corrupted_tokens]),
                                        names_filter=lambda name: name in HOOKS)
    real = torch.cat([train.attention_mask] * 2).bool()
    saes = {}
    for i, hook in enumerate(HOOKS):
        acts = cache[hook]
        acts = (acts.flatten(-2) if acts.ndim == 4 else acts)[real]

        def batches(acts: torch.Tensor = acts, gen: torch.Generator = torch.Generator().manual_seed(i)
                    ) -> Iterator[torch.Tensor]:
            while True:
                yield acts[torch.randint(0, acts.shape[0], (256,), generator=gen)]

        torch.manual_seed(seed + i)
        sae = build_sae("gba", acts.shape[-1], WIDTH, **gba_settings)
        train_sae(sae, batches(), TrainConfig(total_samples=256 * steps, batch_size=256, lr=3e-3))
        saes[hook] = sae.to_inference_sae()
    return saes


def real_token_codes(attached: Any, tokens: Int[torch.Tensor, "batch pos"],
                     attention_mask: Int[torch.Tensor, "batch pos"]) -> dict[str, Float[torch.Tensor, "real d_sae"]]:
    """Per attached hook, its SAE's feature activations at the real (unpadded) tokens of ``tokens``,
    from one forward pass."""
    names = {hook: attached.feature_hook_name(hook) for hook in attached.saes}
    with torch.no_grad():
        _, cache = attached.model.run_with_cache(tokens, names_filter=lambda name: name in names.values())
    real = attention_mask.bool()
    return {hook: cache[name][real] for hook, name in names.items()}


def top_and_random_ablation(
    attached: Any, tokens: Int[torch.Tensor, "batch pos"], codes: Float[torch.Tensor, "real d_sae"],
    metric: Callable[[torch.Tensor], torch.Tensor], hook: str, feature_totals: Float[torch.Tensor, " d_sae"],
    k: int = 10, draws: int = 20,
) -> tuple[float, float]:
    """The metric's change from zero-ablating the ``k`` features with the most negative attribution
    totals at ``hook``, and its mean change over ``draws`` ablations of ``k`` random features active on
    some real token (``codes``: the hook's :func:`real_token_codes`; a fixed stream)."""
    top = torch.argsort(feature_totals)[:k].tolist()
    top_delta = float(ablate_features(attached, tokens, {hook: top}, metric).delta)
    active = torch.nonzero((codes > 0).any(0)).flatten()
    gen = torch.Generator().manual_seed(0)
    random_deltas = [
        float(ablate_features(attached, tokens, {hook: active[torch.randperm(len(active), generator=gen)[:k]].tolist()},
                              metric).delta)
        for _ in range(draws)
    ]
    return top_delta, sum(random_deltas) / len(random_deltas)


def exact_top_features(attached: Any, tokens: Int[torch.Tensor, "batch pos"],
                       metric: Callable[[torch.Tensor], torch.Tensor], k: int = 10) -> dict[str, list[int]]:
    """Per attached hook, the ``k`` features whose zero-ablation, one at a time, lowers the metric most
    (:func:`~gba_lens.circuits.ablation_sweep` over every active feature). Attribution estimates
    the clean-to-corrupted patch instead, which ranks the features otherwise."""
    sweep = ablation_sweep(attached, tokens, metric, features="active", progress=False)
    return {hook: [int(f) for f in rows.sort_values("delta")["feature"].head(k)]
            for hook, rows in sweep.groupby("hook")}
