"""IOI metrics on the logits of a model, and the IOI prompt sets (re-exported from tasks).

The prompt sets live in :mod:`gba_lens.tasks.ioi` (task code); they are re-exported here, where
they have always been importable. The metrics below work on the logits of any TransformerLens
model (HookedTransformer, HookedSAETransformer, TransformerBridge) and are differentiable, so they
can serve as attribution metrics; they use the one logit-difference core,
:func:`gba_lens.circuits.metrics.answer_logit_diff`.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from gba_lens.circuits.metrics import answer_logit_diff
from gba_lens.tasks import ioi as tasks_ioi
from gba_lens.tasks.ioi import (
    IOI_NAMES,
    IOI_OBJECTS,
    IOI_PLACES,
    IOI_TEMPLATES,
    Corruption,
    IOIPromptSet,
    babatemplate,
    make_ioi_prompts,
    single_token_names,
)

__all__ = [
    *tasks_ioi.__all__,
    "logit_diff",
    "mean_logit_diff",
    "logit_diff_accuracy",
    "normalized_logit_diff",
]


def logit_diff(
    logits: Float[torch.Tensor, "batch pos d_vocab"] | Float[torch.Tensor, "batch d_vocab"],
    prompt_set: IOIPromptSet,
) -> Float[torch.Tensor, " batch"]:
    """Per-prompt ``logit(IO) - logit(S)`` at the final prompt position (differentiable).

    Args:
        logits: model output on ``prompt_set.clean_tokens`` (or ``corrupted_tokens``), shape
            ``[batch, pos, d_vocab]``, or logits already taken at ``end_pos``
            (``[batch, d_vocab]``).
        prompt_set: the prompts (gives ``end_pos`` and ``answer_tokens``).
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    n = len(prompt_set)
    if logits.shape[0] != n:
        raise ValueError(f"logits have batch size {logits.shape[0]}, prompt set has {n} prompts")
    diff = answer_logit_diff(logits, prompt_set.answer_tokens, prompt_set.end_pos)
    if torch.isnan(diff.detach()).any():
        raise ValueError("logit difference is NaN: the logits contain NaN at the answer tokens")
    return diff


def mean_logit_diff(
    logits: Float[torch.Tensor, "batch pos d_vocab"] | Float[torch.Tensor, "batch d_vocab"],
    prompt_set: IOIPromptSet,
) -> Float[torch.Tensor, ""]:
    """Mean of :func:`logit_diff` over the batch (a scalar metric for patching / attribution)."""
    return logit_diff(logits, prompt_set).mean()


def logit_diff_accuracy(
    logits: Float[torch.Tensor, "batch pos d_vocab"] | Float[torch.Tensor, "batch d_vocab"],
    prompt_set: IOIPromptSet,
) -> float:
    """Fraction of prompts where the IO logit exceeds the S logit."""
    return float((logit_diff(logits, prompt_set).detach() > 0).float().mean())


def normalized_logit_diff(
    logits: Float[torch.Tensor, "batch pos d_vocab"] | Float[torch.Tensor, "batch d_vocab"],
    prompt_set: IOIPromptSet,
    clean_value: float | torch.Tensor,
    corrupted_value: float | torch.Tensor,
) -> Float[torch.Tensor, ""]:
    """Mean logit difference rescaled so the corrupted run gives 0 and the clean run gives 1."""
    denom = float(clean_value) - float(corrupted_value)
    if abs(denom) < 1e-8:
        raise ValueError("clean and corrupted logit differences are equal; cannot normalise")
    return (mean_logit_diff(logits, prompt_set) - float(corrupted_value)) / denom
