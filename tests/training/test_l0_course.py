"""A GBA run whose L0 is still falling when training ends says so (gba_lens.training.l0_course)."""

import math
import warnings

import pytest
import torch

from gba_lens.data.batches import SeededBatches
from gba_lens.training.l0_course import (FALL_TOLERANCE, SCALE_TOLERANCE, SILENT_SHARE, L0Course, found_l0_unsettled,
                                         silent_error)
from gba_lens.training.train import TrainConfig, train_sae
from training_builders import relu_sampler, tiny_gba_sae


def test_only_the_last_two_tenths_before_the_decay_count_each_in_its_window():
    course = L0Course()
    for step in range(130):  # done fraction after step n: (n + 1) / 100 (30 decay steps); L0 = n
        course.add((step + 1) / 100, torch.tensor(step / 50), 50)
    assert course.steps == [10, 10]
    assert course.means() == pytest.approx((sum(range(80, 90)) / 10, sum(range(90, 100)) / 10))


def test_a_fall_beyond_the_tolerance_is_reported_and_a_flat_or_rising_l0_is_not():
    def course_of(before, last):
        course = L0Course()
        course.add(0.85, torch.tensor(before / 100), 100)
        course.add(0.95, torch.tensor(last / 100), 100)
        return course

    message = course_of(10.0, 8.0).still_falling()
    assert message is not None and "10 -> 8" in message and "-20%" in message
    assert course_of(10.0, 10.0 * (1 - FALL_TOLERANCE) + 0.01).still_falling() is None
    assert course_of(10.0, 11.0).still_falling() is None
    assert L0Course().still_falling() is None  # a run too short to fill both windows
    only_last = L0Course()
    only_last.add(0.95, torch.tensor(0.01), 100)
    assert only_last.means() is None


def test_the_silent_rows_error_is_the_error_of_the_rows_no_latent_fires_on_dense_or_sparse():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    out = torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    acts = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])  # rows 0 and 2 silent
    silent, variance, n_silent = silent_error(x, out, acts)
    assert int(n_silent) == 2
    assert float(silent) == pytest.approx(1.0)  # row 0's error 1, row 2's 0; row 1 fired (error 4)
    assert float(variance) == pytest.approx(float(((x - x.mean(0)) ** 2).sum()))
    sparse = silent_error(x, out, acts.to_sparse())
    assert float(sparse[0]) == float(silent) and float(sparse[1]) == float(variance) and int(sparse[2]) == 2


def test_silent_inputs_leaving_much_of_the_variance_report_a_found_l0_far_too_low_and_survive_a_checkpoint():
    def course_of(silent_share, fraction=0.9):
        course = L0Course()
        course.add(0.85, torch.tensor(0.05), 100)  # a settled L0 and scale: nothing else to report
        course.add(0.95, torch.tensor(0.05), 100)
        course.add_silent(fraction, torch.tensor(silent_share * 10.0), torch.tensor(10.0))
        return course

    message = course_of(0.45).found_l0_unsettled(at_bound=0)
    assert message is not None and "far too low" in message and "45%" in message and "target_l0" in message
    assert course_of(SILENT_SHARE - 0.01).found_l0_unsettled(at_bound=0) is None
    assert course_of(0.45, fraction=0.5).found_l0_unsettled(at_bound=0) is None  # before the windows: not counted
    assert not L0Course.counts_silent(0.5) and L0Course.counts_silent(0.85)
    resumed = L0Course()
    resumed.load_state_dict(course_of(0.45).state_dict())
    assert resumed.silent_share() == pytest.approx(0.45)
    old = course_of(0.45).state_dict()
    del old["silent_sums"]  # written before the silent rows were counted
    before = L0Course()
    before.load_state_dict(old)
    assert before.silent_share() is None


def test_a_found_l0s_scale_moving_beyond_the_tolerance_gives_its_direction_and_survives_a_checkpoint():
    def course_of(before, last):
        course = L0Course()
        for fraction, scale in ((0.85, before), (0.86, before), (0.95, last)):
            course.add(fraction, torch.tensor(0.05), 100)
            course.add_scale(fraction, torch.tensor(math.log(scale)))
        return course

    assert course_of(1.0, 1.2).scale_direction() == 1
    assert course_of(1.0, 0.8).scale_direction() == -1
    assert course_of(1.0, 1.0 + SCALE_TOLERANCE - 0.01).scale_direction() == 0
    assert L0Course().scale_direction() == 0
    resumed = L0Course()
    resumed.load_state_dict(course_of(1.0, 1.2).state_dict())
    assert resumed.scale_direction() == 1
    old = course_of(1.0, 1.2).state_dict()
    del old["scale_sums"], old["scale_steps"]  # written before find_l0: no scale recorded
    before_find_l0 = L0Course()
    before_find_l0.load_state_dict(old)
    assert before_find_l0.scale_direction() == 0 and before_find_l0.means() == pytest.approx((5.0, 5.0))


def test_a_found_l0_ending_at_a_bound_or_still_moving_says_which():
    from gba_lens.saes.l0_control import FOUND_BOUND, L0Control

    control = L0Control(None, torch.full((10,), 0.01))
    assert control.found_bound_reached() == 0
    for _ in range(100):
        control.follow(3.0, 0.6)  # far above 1: the scale rises until its bound
    assert control.found_bound_reached() == 1
    assert float(control.relative_scale()) == pytest.approx(FOUND_BOUND, rel=1e-4)
    assert "upper bound" in found_l0_unsettled(0, control.found_bound_reached())
    for _ in range(200):
        control.follow(0.0, 0.6)
    assert control.found_bound_reached() == -1 and "lower bound" in found_l0_unsettled(1, -1)
    assert "still raising" in found_l0_unsettled(1, 0) and "still lowering" in found_l0_unsettled(-1, 0)
    assert found_l0_unsettled(0, 0) is None


def _train(steps, **train):
    sae = tiny_gba_sae(10, 40, find_l0=False)  # the paper's fixed targets: the L0 converges from above
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = train_sae(sae, SeededBatches(relu_sampler(10, scale=3), 64, seed=3),
                            TrainConfig(total_samples=steps * 64, batch_size=64, lr=1e-2, **train))
    return trainer, [str(w.message) for w in caught if "L0" in str(w.message)]


def test_a_short_run_warns_that_its_l0_was_still_falling_and_a_long_one_does_not():
    short, short_warnings = _train(200)
    before, last = short.l0_course.means()
    assert last < before * (1 - FALL_TOLERANCE)
    assert len(short_warnings) == 1 and "still falling" in short_warnings[0]

    long, long_warnings = _train(800)  # this SAE's L0 has settled by then
    before, last = long.l0_course.means()
    assert last >= before * (1 - FALL_TOLERANCE)
    assert long_warnings == []
    assert short.l0_course.steps == [20, 20] and long.l0_course.steps == [80, 80]


def test_with_a_learning_rate_decay_the_windows_end_where_it_starts():
    # the same 200 steps as the short run above, the last 600 of an 800-step run decaying: the
    # encoder slows down and the L0 with it, which must not count as settled
    decaying, said = _train(800, lr_decay_steps=600)
    assert decaying.l0_course.steps == [20, 20]
    before, last = decaying.l0_course.means()
    assert last < before * (1 - FALL_TOLERANCE)
    assert len(said) == 1 and "still falling" in said[0]
