"""IOI metrics (gba_lens.circuits.ioi) on hand-made logits, and their logit-difference core."""

from __future__ import annotations

import pytest
import torch

from gba_lens.circuits.ioi import (
    logit_diff,
    logit_diff_accuracy,
    make_ioi_prompts,
    mean_logit_diff,
    normalized_logit_diff,
)
from gba_lens.models.ioi_model import load_ioi_model


@pytest.fixture(scope="module")
def ioi_model():
    return load_ioi_model("cpu")


def test_logit_diff_on_hand_made_logits(ioi_model):
    ps = make_ioi_prompts(ioi_model, 6, seed=0)
    n, t = ps.clean_tokens.shape
    vocab = len(ioi_model.tokenizer)
    logits = torch.zeros(n, t, vocab)
    rows = torch.arange(n)
    signs = torch.tensor([1.0, -1.0, 2.0, 0.5, -3.0, 1.0])
    logits[rows, ps.end_pos, ps.answer_tokens[:, 0]] = signs
    logits[rows, ps.end_pos, ps.answer_tokens[:, 1]] = -signs
    # Large values at other positions must be ignored.
    logits[rows, ps.end_pos - 1, ps.answer_tokens[:, 1]] = 100.0
    logits.requires_grad_(True)
    ld = logit_diff(logits, ps)
    assert ld.shape == (n,)
    assert torch.allclose(ld, 2 * signs)
    assert torch.allclose(mean_logit_diff(logits, ps), (2 * signs).mean())
    assert logit_diff_accuracy(logits, ps) == pytest.approx(4 / 6)
    mean_logit_diff(logits, ps).backward()  # differentiable: usable as an attribution metric
    grad = logits.grad
    assert grad is not None and float(grad.abs().sum()) == pytest.approx(2.0)
    assert grad[0, ps.end_pos[0], ps.answer_tokens[0, 0]] == pytest.approx(1 / n)
    final = logits.detach()[rows, ps.end_pos]
    assert torch.allclose(logit_diff(final, ps), 2 * signs)  # [batch, d_vocab] input
    norm = normalized_logit_diff(
        logits.detach(), ps, clean_value=float((2 * signs).mean()), corrupted_value=0.0
    )
    assert float(norm) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="batch size"):
        logit_diff(logits[:3], ps)
    with pytest.raises(ValueError, match="positions"):
        logit_diff(logits[:, :2], ps)
    bad = logits.detach().clone()
    bad[0, ps.end_pos[0], ps.answer_tokens[0, 0]] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        logit_diff(bad, ps)
