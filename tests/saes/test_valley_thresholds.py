"""Valley thresholds (``valley_thresholds=True``): the valley finder, the statistics, the step, and
a GBA SAE that uses them."""

import pytest
import torch

from gba_lens.saes import valley_thresholds as V
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.valley_thresholds import ValleyThresholds, find_valleys


def _bimodal_u(n: int, frequency: float, at: float, seed: int = 0) -> torch.Tensor:
    """u of a neuron on a feature: interference |N(0, 0.1)| everywhere, plus ``at`` (spread 0.03)
    on a fraction ``frequency`` of the samples."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, generator=g).abs() * 0.1
    on = torch.rand(n, generator=g) < frequency
    return torch.where(on, at + 0.03 * torch.randn(n, generator=g), u)


def test_a_second_mode_gives_the_lowest_bin_between_the_modes():
    hist = torch.tensor([[900., 400, 100, 30, 8, 3, 2, 4, 20, 60, 25, 5, 0, 0, 0, 0]])
    has, valley = find_valleys(hist)
    assert has.tolist() == [True]
    assert valley.tolist() == [6]


def test_no_valley_without_a_prominent_second_mode():
    hists = torch.tensor([
        [900., 400, 100, 30, 8, 3, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0],   # one decreasing mode
        [900., 400, 100, 30, 8, 3, 2, 3, 3, 2, 0, 0, 0, 0, 0, 0],   # a bump too small (score < 2)
        [100., 900, 400, 100, 30, 8, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # the noise mode off bin 0: its rising edge is no mode
        [900., 400, 100, 30, 8, 3, 2, 1, 1, 0, 0, 0, 0, 0, 0, 90],  # the overflow bin is no mode
        [900., 400, 100, 30, 8, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0],   # a mode of fewer than MIN_MODE_COUNT samples
    ])
    has, _ = find_valleys(hists)
    assert has.tolist() == [False] * 5


def test_observe_counts_every_kth_row_into_the_right_bins():
    valley = ValleyThresholds(3)
    u = torch.tensor([[-0.5, 0.0, 0.3], [0.2, 1.4, 0.9], [0.61, 0.1, 2.0], [0.0, 0.0, 0.0]]).repeat(V.ROWS_PER_STEP // 2, 1)
    valley.observe(u, torch.zeros(3), global_rows=u.shape[0])  # 2 * ROWS_PER_STEP rows: every 2nd row is taken
    taken = u[::2]
    assert valley.n_samples.item() == V.ROWS_PER_STEP and valley.window_full is (V.ROWS_PER_STEP >= V.WINDOW_SAMPLES)
    expected = torch.zeros(3, V.BINS + 1)
    for row in taken:
        for m, value in enumerate(row.tolist()):
            column = 0 if value < 0 else min(int(value * V.BINS / 1.25) + 1, V.BINS)
            expected[m, column] += 1
    assert torch.equal(valley.histogram, expected)
    assert valley.peak.tolist() == pytest.approx([0.61, 0.1, 2.0])


def test_counting_the_latents_in_blocks_gives_one_passs_histogram_and_combines_once(monkeypatch):
    """On the CPU the histogram counts LATENTS_PER_PASS latents at a time (the counters stay in
    cache); blocks that do not divide the width, non-finite and out-of-range u included, give the
    same counts as one pass, and the global batch's counts are combined once per batch."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(96, 23, generator=g) * 0.6
    u[3, 4], u[5, 6], u[7, 8] = float("nan"), float("inf"), 50.0
    bias = -torch.rand(23, generator=g) * 0.3
    one, blocks = ValleyThresholds(23), ValleyThresholds(23)
    for valley in (one, blocks):
        valley.scale.copy_(torch.rand(23, generator=torch.Generator().manual_seed(1)) + 0.5)
    monkeypatch.setattr(V, "LATENTS_PER_PASS", 10**6)
    one.observe(u + bias, bias, global_rows=96)
    monkeypatch.setattr(V, "LATENTS_PER_PASS", 5)
    combined = []
    blocks.observe(u + bias, bias, global_rows=96, combine_counts=lambda c: combined.append(c.sum().item()))
    assert torch.equal(blocks.histogram, one.histogram)
    assert one.histogram.sum().item() == 96 * 23 and one.histogram[:, 1:].sum().item() > 0
    assert combined == [96 * 23]


def test_the_finite_rows_skip_no_count_and_a_nan_another_ranks_peak_hides_still_goes_to_column_0(monkeypatch):
    """Where this rank's peak says every u is finite, the histogram skips the pass that maps NaN to
    column 0: the counts are those of the pass (u = -inf and out-of-range u included, blocks of the
    CPU's size and wider ones, which count in another integer type). A NaN that a combined peak
    hides (another rank's max) is still caught by this rank's own peak."""
    g = torch.Generator().manual_seed(4)
    u = torch.randn(512, 1000, generator=g) * 0.7
    u[3, 4], u[9, 5], u[11, 30] = float("-inf"), 60.0, -60.0
    bias = -torch.rand(1000, generator=g) * 0.3
    for per_pass in (16, 1000):  # int16 counters up to 992 latents a pass, int32 beyond
        monkeypatch.setattr(V, "LATENTS_PER_PASS", per_pass)
        every, skipped = ValleyThresholds(1000), ValleyThresholds(1000)
        calls = _record_finite(every)
        skipped_calls = _record_finite(skipped)
        every.observe(u + bias, bias, global_rows=512, rows_peak=torch.full((1000,), float("nan")))
        skipped.observe(u + bias, bias, global_rows=512)
        assert calls == [False] * (1000 // per_pass + (1000 % per_pass > 0)) and skipped_calls == [True] * len(calls)
        assert torch.equal(skipped.histogram, every.histogram)
        assert skipped.histogram[4, 0] >= 1 and skipped.histogram[5, -1] >= 1
    with_nan = u.clone()
    with_nan[0, 7] = float("nan")  # row 0 is taken (every row of 512)
    combined_peak = torch.ones(1000)  # another rank's finite max, as a reduction that drops NaN gives
    valley, finite = ValleyThresholds(1000), ValleyThresholds(1000)
    calls = _record_finite(valley)
    valley.observe(with_nan + bias, bias, global_rows=512, batch_peak=combined_peak,
                   rows_peak=(with_nan + bias).amax(0))
    finite.observe(u + bias, bias, global_rows=512, batch_peak=combined_peak)
    assert calls and not any(calls)
    expected = finite.histogram.clone()
    expected[7, 0] += 1
    expected[7, int((1 + u[0, 7] * (V.BINS / 1.25)).clamp(0, V.BINS))] -= 1
    assert torch.equal(valley.histogram, expected)


def _record_finite(valley: ValleyThresholds) -> list[bool]:
    """Record, per block, whether ``valley``'s histogram was told its rows are finite."""
    calls: list[bool] = []
    block_counts = valley._block_counts

    def recorded(*args):
        calls.append(args[-1])
        return block_counts(*args)
    valley._block_counts = recorded
    return calls


def test_observe_takes_the_windows_max_u_from_the_batch_peak_where_given():
    # every 2nd row is taken; the largest u of neurons 0 and 2 lies in rows that are not
    u = torch.tensor([[0.1, 0.4, 0.2], [0.9, 0.1, 0.3], [0.2, 0.2, 0.1], [0.3, 0.1, 1.5]]).repeat(V.ROWS_PER_STEP // 2, 1)
    bias = torch.full((3,), -0.1)
    sampled, given = ValleyThresholds(3), ValleyThresholds(3)
    sampled.observe(u - 0.1, bias, global_rows=u.shape[0])
    given.observe(u - 0.1, bias, global_rows=u.shape[0], batch_peak=(u - 0.1).amax(0))
    assert sampled.peak.tolist() == pytest.approx([0.2, 0.4, 0.2])
    assert given.peak.tolist() == pytest.approx([0.9, 0.4, 1.5])
    assert torch.equal(given.histogram, sampled.histogram) and given.n_samples == sampled.n_samples


def test_a_window_moves_a_bimodal_neurons_threshold_into_its_valley_and_leaves_the_others():
    n = V.WINDOW_SAMPLES
    u = torch.stack([_bimodal_u(n, 0.02, 0.8), torch.randn(n).abs() * 0.1, _bimodal_u(n, 0.3, 0.6, seed=1)], 1)
    valley = ValleyThresholds(3)
    valley.scale.fill_(1.0)
    for rows in u.split(V.ROWS_PER_STEP):
        valley.observe(rows - 0.1, torch.full((3,), -0.1), rows.shape[0])
    assert valley.window_full
    bias = torch.tensor([-0.05, -0.3, -0.9])
    found = valley.apply(bias, -1.0, 0.0)
    assert found.fraction.item() == pytest.approx(2 / 3)
    assert found.has_valley.tolist() == [True, False, True]
    # the mass above each valley is its feature's frequency
    assert found.frequency[[0, 2]].tolist() == pytest.approx([0.02, 0.3], abs=0.01)
    # the valley lies between the interference (< ~0.3) and the feature (~0.8 / ~0.6)
    assert 0.3 < -bias[0] < 0.7 and 0.3 < -bias[2] < 0.55
    assert bias[1].item() == pytest.approx(-0.3)          # unimodal: left to the bias rule
    # the neuron now fires on (about) its feature's samples only
    assert (u[:, 0] > -bias[0]).float().mean().item() == pytest.approx(0.02, abs=0.005)
    assert valley.n_samples.item() == 0 and valley.histogram.sum() == 0 and not valley.window_full
    assert valley.scale.tolist() == pytest.approx(u.amax(0).tolist())  # next window's range


def test_each_batchs_counts_are_combined_before_they_are_added_and_the_window_reduces_its_peak():
    """Data parallel: every rank adds the global batch's counts (so a checkpoint written mid-window
    by one rank holds the whole window) and the window's max u is all-reduced before it is applied."""
    torch.manual_seed(0)
    u = torch.randn(64, 3).abs()
    bias = torch.full((3,), -0.5)
    ranks = [ValleyThresholds(3) for _ in range(2)]
    single = ValleyThresholds(3)
    single.observe(u + bias, bias, global_rows=64)
    halves = [u[:32], u[32:]]
    counts = [None, None]

    def combine(rank):
        def sum_over_ranks(c):  # the other rank's counts of its half, added in place as an all-reduce
            other = ValleyThresholds(3)
            other.observe(halves[1 - rank] + bias, bias, global_rows=64)
            counts[rank] = c.clone()
            c += other.histogram.view(-1)
        return sum_over_ranks

    for rank in (0, 1):
        ranks[rank].observe(halves[rank] + bias, bias, global_rows=64, combine_counts=combine(rank))
        assert torch.equal(ranks[rank].histogram, single.histogram)  # the global window on every rank
        assert counts[rank].sum() == 32 * 3  # what the rank counted itself: its own rows
    calls = []
    valley = ValleyThresholds(2)
    valley.histogram.fill_(1.0)
    valley.peak.copy_(torch.tensor([0.5, 0.2]))

    def fake_all_reduce(tensor, op):
        calls.append(op)
        tensor.copy_(torch.maximum(tensor, torch.tensor([0.1, 0.9])))

    valley.reduce_statistics(fake_all_reduce)
    assert calls == ["max"]  # the histogram is global already: summing it again would count it twice
    assert valley.histogram.eq(1).all() and valley.peak.tolist() == pytest.approx([0.5, 0.9])


def _sae(**options):
    torch.manual_seed(0)
    return GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, n_groups=4, **options))


def test_the_option_adds_checkpointed_statistics_that_an_exported_sae_does_not_carry(step_input, monkeypatch):
    monkeypatch.setattr(V, "WINDOW_SAMPLES", 128)
    sae = _sae(valley_thresholds=True)
    assert _sae(find_l0=False).valley_thresholds is None  # the paper's rule: no valley statistics
    assert _sae().valley_thresholds is not None  # on by default, with find_l0
    x = torch.relu(torch.randn(64, 8)) * 2
    sae.training_forward_pass(step_input(x, 0))
    out = sae.training_forward_pass(step_input(x, 1))  # the second batch fills the window
    assert "gba/valley_fraction" in out.metrics
    assert sae.valley_thresholds.n_samples.item() == 0
    state = sae.state_dict()
    assert {"valley_thresholds.histogram", "valley_thresholds.scale", "valley_thresholds.peak",
            "valley_thresholds.n_samples"} <= state.keys()
    assert not any("valley" in key for key in sae.to_inference_sae().state_dict())


def test_the_sae_gives_the_window_the_max_u_of_every_row_of_the_batch(step_input, monkeypatch):
    monkeypatch.setattr(V, "ROWS_PER_STEP", 16)  # a batch of 64: every 4th row enters the histogram
    sae = _sae(valley_thresholds=True)
    x = torch.relu(torch.randn(64, 8, generator=torch.Generator().manual_seed(3))) * 2
    bias = sae.b_enc.detach().clone()  # the rule moves it after the histogram has read u
    out = sae.training_forward_pass(step_input(x, 0))
    y = out.hidden_pre.detach()
    assert sae.valley_thresholds.n_samples.item() == 16
    assert torch.allclose(sae.valley_thresholds.peak, y.amax(0) - bias)
    assert not torch.allclose(sae.valley_thresholds.peak, y[::4].amax(0) - bias)


def test_a_run_resumed_mid_window_continues_exactly(step_input, monkeypatch):
    monkeypatch.setattr(V, "WINDOW_SAMPLES", 192)  # 3 batches of 64
    gen = torch.Generator().manual_seed(1)
    batches = [torch.relu(torch.randn(64, 8, generator=gen)) * 2 for _ in range(8)]
    straight = _sae(valley_thresholds=True)
    for step, x in enumerate(batches):
        straight.training_forward_pass(step_input(x, step))
    first = _sae(valley_thresholds=True)
    for step, x in enumerate(batches[:4]):  # stops one batch into a window
        first.training_forward_pass(step_input(x, step))
    resumed = _sae(valley_thresholds=True)
    resumed.load_state_dict(first.state_dict())
    for step, x in enumerate(batches[4:], start=4):
        resumed.training_forward_pass(step_input(x, step))
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_valley_thresholds_recover_zipfian_features_better_than_the_target_rule_alone():
    """On a Zipfian model (features from 0.2 down to 0.002), the geometric rule makes a neuron on a
    feature rarer than its target fire at the target, on inputs without its feature; with valley
    thresholds it fires where its feature is: F1 and MCC rise (measured: F1 0.51 -> 0.76,
    MCC 0.77 -> 0.85)."""
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    from gba_lens.data import SeededBatches
    from gba_lens.synthetic.metrics import evaluate_on_synthetic
    from gba_lens.training.train import TrainConfig, train_sae

    model = SyntheticModel(SyntheticModelConfig(
        num_features=128, hidden_dim=32,
        firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.2, min_prob=0.002), seed=0))
    results = {}
    for valley in (False, True):
        torch.manual_seed(0)
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=32, d_sae=128, valley_thresholds=valley))
        cfg = TrainConfig(total_samples=500_000, batch_size=1024, lr=1e-2, lr_decay_steps=146, device="cpu")
        train_sae(sae, SeededBatches(model.sample, 1024, seed=0), cfg)
        results[valley] = evaluate_on_synthetic(sae.to_inference_sae(), model, n_samples=20_000)
    geometric, valley = results[False], results[True]
    assert valley.f1 > geometric.f1 + 0.1
    assert valley.mcc > geometric.mcc + 0.03


def test_the_sparse_step_feeds_the_same_histograms_as_the_dense_step(step_input):
    gen = torch.Generator().manual_seed(2)
    batches = [torch.relu(torch.randn(128, 8, generator=gen)) * 2 for _ in range(3)]
    states = []
    for mode in ("off", "on"):
        sae = _sae(valley_thresholds=True, sparse_step=mode)
        for step, x in enumerate(batches):
            sae.training_forward_pass(step_input(x, step))
        states.append(sae.valley_thresholds.state_dict())
    assert states[0]["histogram"].sum() == 3 * 128 * 32
    for key, value in states[0].items():
        assert torch.equal(states[1][key], value), key
