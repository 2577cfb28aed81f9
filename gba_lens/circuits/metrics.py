"""Metrics for ablation, steering and attribution: functions of the model's logits.

A *metric* is any callable ``logits [batch, pos, d_vocab] -> scalar tensor`` (a vector is
averaged). The factories here build the common ones; they are differentiable, so they also serve
as attribution targets. For IOI prompt sets, ``lambda logits: mean_logit_diff(logits, prompt_set)``
from :mod:`gba_lens.circuits.ioi` is the standard metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int

from gba_lens.circuits.types import Metric

__all__ = [
    "answer_logit_diff",
    "logit_diff_metric",
    "token_logit_metric",
    "token_prob_metric",
    "token_logprob_metric",
    "kl_divergence",
]


def _final_logits(
    logits: torch.Tensor, positions: Int[torch.Tensor, " batch"] | int
) -> Float[torch.Tensor, "batch d_vocab"]:
    if logits.ndim != 3:
        raise ValueError(f"Expected logits [batch, pos, d_vocab], got shape {list(logits.shape)}.")
    n_pos = logits.shape[1]
    if isinstance(positions, int):
        if not -n_pos <= positions < n_pos:
            raise ValueError(f"Answer position {positions} is out of range for logits with {n_pos} positions.")
        return logits[:, positions]
    pos = positions.to(logits.device).long()
    if pos.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{pos.shape[0]} answer positions for a batch of {logits.shape[0]} "
            "(a metric built for one batch size is applied to another)."
        )
    if len(pos) and int(pos.max()) >= n_pos:
        raise ValueError(
            f"logits have {n_pos} positions but an answer position is {int(pos.max())}; run the "
            "model on the prompts the positions belong to."
        )
    return logits[torch.arange(logits.shape[0], device=logits.device), pos]


def answer_logit_diff(
    logits: Float[torch.Tensor, "batch pos d_vocab"] | Float[torch.Tensor, "batch d_vocab"],
    answer_tokens: Int[torch.Tensor, "batch 2"] | Int[torch.Tensor, "1 2"],
    positions: Int[torch.Tensor, " batch"] | int = -1,
) -> Float[torch.Tensor, " batch"]:
    """Per-prompt ``logit(answer_tokens[:, 0]) - logit(answer_tokens[:, 1])`` (differentiable).

    The one logit-difference core of gba_lens: :func:`logit_diff_metric` and the IOI metrics
    (:func:`gba_lens.circuits.ioi.logit_diff`) are built on it.

    Args:
        logits: ``[batch, pos, d_vocab]`` (taken at ``positions``) or ``[batch, d_vocab]``
            (already at the answer position; ``positions`` is ignored).
        answer_tokens: ``[batch, 2]`` ids (column 0 correct, column 1 wrong), or ``[1, 2]``
            shared by every prompt.
        positions: the answer position, an int for all prompts or one per prompt.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim == 3:
        final = _final_logits(logits, positions)
    elif logits.ndim == 2:
        final = logits
    else:
        raise ValueError(f"logits must be [batch, pos, d_vocab] or [batch, d_vocab], got {tuple(logits.shape)}")
    if answer_tokens.ndim != 2 or answer_tokens.shape[1] != 2:
        raise ValueError(f"answer_tokens must be [batch, 2], got shape {list(answer_tokens.shape)}.")
    if len(answer_tokens) and (int(answer_tokens.max()) >= final.shape[-1] or int(answer_tokens.min()) < 0):
        raise ValueError(
            f"answer token ids {int(answer_tokens.min())}..{int(answer_tokens.max())} are outside the "
            f"logits' vocabulary of {final.shape[-1]}: the answers were built with another tokenizer"
        )
    ans = answer_tokens.to(final.device)
    if ans.shape[0] == 1:
        ans = ans.expand(final.shape[0], 2)
    if ans.shape[0] != final.shape[0]:
        raise ValueError(f"answer_tokens has {ans.shape[0]} rows for a batch of {final.shape[0]}.")
    picked = final.gather(-1, ans)
    return picked[:, 0] - picked[:, 1]


def _token_column(tokens: int | Sequence[int] | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(tokens, dtype=torch.long, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape[0] != batch:
        raise ValueError(f"{t.shape[0]} target tokens for a batch of {batch}.")
    return t


def logit_diff_metric(
    answer_tokens: Int[torch.Tensor, "batch 2"] | Sequence[int],
    positions: Int[torch.Tensor, " batch"] | int = -1,
) -> Metric:
    """Mean over the batch of ``logit(correct) - logit(wrong)`` at ``positions``.

    Args:
        answer_tokens: ``[batch, 2]`` token ids (column 0 correct, column 1 wrong), or one pair
            ``(correct, wrong)`` shared by every prompt.
        positions: the position whose logits predict the answer: an int for all prompts
            (default the last), or ``[batch]`` (e.g. ``IOIPromptSet.end_pos`` for padded prompts).
    """
    answers = torch.as_tensor(answer_tokens, dtype=torch.long)
    if answers.ndim == 1:
        if answers.shape[0] != 2:
            raise ValueError(f"answer_tokens must be (correct, wrong) or [batch, 2], got {answers.tolist()}.")
        answers = answers[None]
    if answers.ndim != 2 or answers.shape[1] != 2:
        raise ValueError(f"answer_tokens must be [batch, 2], got shape {list(answers.shape)}.")

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return answer_logit_diff(logits, answers, positions).mean()

    return metric


def _token_metric(token: int | Sequence[int] | torch.Tensor, positions: Int[torch.Tensor, " batch"] | int,
                  transform: Callable[[torch.Tensor], torch.Tensor]) -> Metric:
    """Mean over prompts of ``transform(final logits)`` at ``token`` (one id, or one per prompt)."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        final = transform(_final_logits(logits, positions))
        tok = _token_column(token, final.shape[0], final.device)
        return final.gather(-1, tok[:, None]).mean()

    return metric


def token_logit_metric(token: int | Sequence[int] | torch.Tensor, positions: Int[torch.Tensor, " batch"] | int = -1) -> Metric:
    """Mean logit of ``token`` (one id, or one per prompt) at ``positions`` (default the last)."""
    return _token_metric(token, positions, lambda final: final)


def token_logprob_metric(token: int | Sequence[int] | torch.Tensor, positions: Int[torch.Tensor, " batch"] | int = -1) -> Metric:
    """Mean log-probability of ``token`` at ``positions``."""
    return _token_metric(token, positions, lambda final: final.float().log_softmax(-1))


def token_prob_metric(token: int | Sequence[int] | torch.Tensor, positions: Int[torch.Tensor, " batch"] | int = -1) -> Metric:
    """Mean probability of ``token`` at ``positions``."""
    return _token_metric(token, positions, lambda final: final.float().softmax(-1))


def kl_divergence(
    reference_logits: Float[torch.Tensor, "batch pos d_vocab"],
    logits: Float[torch.Tensor, "batch pos d_vocab"],
    mask: Bool[torch.Tensor, "batch pos"] | None = None,
) -> torch.Tensor:
    """Mean over (masked) positions of ``KL(p_reference || p)`` of the next-token distributions."""
    if reference_logits.shape != logits.shape:
        raise ValueError(f"Logit shapes differ: {list(reference_logits.shape)} vs {list(logits.shape)}.")
    ref = reference_logits.float().log_softmax(-1)
    new = logits.float().log_softmax(-1)
    kl = (ref.exp() * (ref - new)).sum(-1)  # [batch, pos]
    if mask is None:
        return kl.mean()
    mask = mask.to(kl.device)
    if not mask.any():
        raise ValueError("The KL mask selects no position.")
    return kl[mask].mean()
