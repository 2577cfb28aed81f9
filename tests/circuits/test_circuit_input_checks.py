"""Bad input to the circuit utilities is refused with a one-line ValueError, never coerced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gba_lens import attach
from gba_lens.circuits import (
    Clamp,
    Steer,
    ablate_features,
    answer_logit_diff,
    exact_patching,
    run_with_steering,
    steering_sweep,
)

from circuit_builders import BATCH, D_VOCAB, RESID, SEQ


def _one_line(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("bad", [3.7, True, "3", np.float64(3.0), torch.tensor([3.0]), [1, 2.5], [False]])
def test_non_integer_feature_ids_are_refused(tiny, bad):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        with pytest.raises(ValueError, match="integers") as excinfo:
            ablate_features(att, clean, {RESID: bad}, metric)
    _one_line(excinfo)


def test_integer_like_ids_and_a_full_mask_are_accepted(tiny):
    model, saes, clean, _, metric, _ = tiny
    mask = torch.zeros(64, dtype=torch.bool)
    mask[[3, 5]] = True
    with attach(model, saes, error_term=True) as att:
        by_list = ablate_features(att, clean, {RESID: [3, 5]}, metric).delta
        assert ablate_features(att, clean, {RESID: np.array([3, 5])}, metric).delta == by_list
        assert ablate_features(att, clean, {RESID: [np.int64(3), torch.tensor(5)]}, metric).delta == by_list
        assert ablate_features(att, clean, {RESID: mask}, metric).delta == by_list
        assert ablate_features(att, clean, [(RESID, 3), (RESID, 5)], metric).delta == by_list


def test_out_of_range_ids_short_masks_and_empty_feature_lists(tiny):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        for bad in ([64], [-1]):
            with pytest.raises(ValueError, match="out of range"):
                ablate_features(att, clean, {RESID: bad}, metric)
        with pytest.raises(ValueError, match=r"shape \[d_sae\]"):
            ablate_features(att, clean, {RESID: torch.tensor([True, False])}, metric)
        for empty in ({RESID: []}, {}, {RESID: torch.zeros(64, dtype=torch.bool)}):
            with pytest.raises(ValueError, match="No features"):
                ablate_features(att, clean, empty, metric)
        with pytest.raises(ValueError, match="No features"):
            steering_sweep(att, clean, {RESID: []}, [0.0, 1.0], metric, progress=False)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf"), "1.0", True])
def test_non_finite_coefficients_and_values_are_refused(number):
    with pytest.raises(ValueError, match="coefficient must be a finite number"):
        Steer(RESID, 3, number)
    with pytest.raises(ValueError, match="value must be a finite number"):
        Clamp(RESID, 3, number)


def test_steer_and_clamp_refuse_non_integer_features(tiny):
    for bad in (3.7, True, "3"):
        with pytest.raises(ValueError, match="integers"):
            Steer(RESID, bad, 1.0)
        with pytest.raises(ValueError, match="integers"):
            Clamp(RESID, bad, 1.0)
    assert Steer(RESID, np.int64(3), torch.tensor(2.0)).feature == 3
    model, saes, clean, _, _, _ = tiny
    with attach(model, saes, error_term=True) as att, pytest.raises(ValueError, match="out of range"):
        run_with_steering(att, clean, Clamp(RESID, 64, 1.0))


def test_steering_sweep_refuses_non_finite_coefficients(tiny):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, saes, error_term=True) as att, pytest.raises(ValueError, match="finite"):
        steering_sweep(att, clean, {RESID: [3]}, [0.0, float("nan")], metric, progress=False)


def test_exact_patching_checks_its_nodes(tiny):
    model, saes, clean, corrupt, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        for node, match in (
            ((RESID, 64, None), "out of range"),
            ((RESID, 2.5, None), "integers"),
            ((RESID, 3, SEQ), "position"),
            ((RESID, 3, 1.0), "position"),
            ((RESID, 3), r"\(hook, feature"),
        ):
            with pytest.raises(ValueError, match=match) as excinfo:
                exact_patching(att, clean, corrupt, [node], metric, progress=False)
            _one_line(excinfo)
        with pytest.raises(ValueError, match="No nodes"):
            exact_patching(att, clean, corrupt, [], metric, progress=False)
        ok = exact_patching(att, clean, corrupt, [(RESID, np.int64(3), np.int64(-1))], metric, progress=False)
        assert list(ok["feature"]) == [3] and list(ok["position"]) == [-1]


def test_token_ids_and_batches_are_checked(tiny):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        negative = clean.clone()
        negative[0, 0] = -1
        too_big = clean.clone()
        too_big[1, 2] = D_VOCAB
        for bad in (negative, too_big):
            with pytest.raises(ValueError, match="Token ids must be in") as excinfo:
                ablate_features(att, bad, {RESID: [3]}, metric)
            _one_line(excinfo)
        for empty in (clean[:0], clean[:, :0]):
            with pytest.raises(ValueError, match="Empty batch"):
                ablate_features(att, empty, {RESID: [3]}, metric)


def test_logit_diff_core_checks_answers_and_positions():
    logits = torch.randn(BATCH, SEQ, D_VOCAB)
    good = torch.tensor([[1, 2]] * BATCH)
    assert answer_logit_diff(logits, good).shape == (BATCH,)
    torch.testing.assert_close(answer_logit_diff(logits[:, -1], good), answer_logit_diff(logits, good))
    with pytest.raises(ValueError, match="vocabulary"):
        answer_logit_diff(logits, torch.tensor([[1, D_VOCAB]] * BATCH))
    with pytest.raises(ValueError, match="vocabulary"):
        answer_logit_diff(logits, torch.tensor([[-1, 2]] * BATCH))
    with pytest.raises(ValueError, match="out of range"):
        answer_logit_diff(logits, good, positions=SEQ)
    with pytest.raises(ValueError, match="positions"):
        answer_logit_diff(logits, good, positions=torch.full((BATCH,), SEQ))
    with pytest.raises(ValueError, match="rows for a batch"):
        answer_logit_diff(logits, torch.tensor([[1, 2]] * (BATCH + 1)))


def test_positions_must_be_integers(tiny):
    model, saes, clean, _, metric, _ = tiny
    with attach(model, saes, error_term=True) as att:
        for bad in ([1.5], [True], 2.0, "1", torch.tensor([1.0] * BATCH)):
            with pytest.raises(ValueError, match="integers") as excinfo:
                ablate_features(att, clean, {RESID: [3]}, metric, positions=bad)
            _one_line(excinfo)
        by_int = ablate_features(att, clean, {RESID: [3]}, metric, positions=2).delta
        assert ablate_features(att, clean, {RESID: [3]}, metric, positions=[np.int64(2)]).delta == by_int
        assert ablate_features(att, clean, {RESID: [3]}, metric, positions=torch.tensor(2)).delta == by_int
