"""``decoder_refit`` in gba_lens's trainers: the run's last rows kept, the decoder refitted once after
the last step, a resumed run that ends as an uninterrupted one (inside the window too, from a stream that
can seek) and says so where its stream cannot seek back."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from gba_lens.data.batches import SeededBatches
from gba_lens.saes import decoder_refit, refit_check
from gba_lens.training import refit_window
from gba_lens.training.train import TrainConfig, train_sae
from training_builders import Killed, dies_at, relu_sampler, step_input, tiny_gba_sae

STEPS, BATCH, WINDOW = 24, 64, 150  # the window reaches into 3 steps: the last 192 rows are kept
_sample = relu_sampler(10, scale=3)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(total_samples=STEPS * BATCH, batch_size=BATCH, lr=1e-2, lr_decay_steps=10,
                                 device="cpu"), **kw})


def _batches() -> list[torch.Tensor]:
    stream = SeededBatches(_sample, BATCH, seed=3)
    return [next(stream) for _ in range(STEPS)]


@pytest.fixture
def calls(monkeypatch):
    """Each refit's rows and the decoder and firing offsets before it (ROWS = WINDOW)."""
    monkeypatch.setattr(decoder_refit, "ROWS", WINDOW)
    monkeypatch.setattr(refit_check, "TRUSTED_FIRINGS", 0.0)  # 150 rows for 40 latents: refitted unchecked
    seen = []
    refit = refit_window.refit_decoder

    def recording(sae, rows, *args, **kwargs):
        seen.append({"rows": rows.clone(), "before": sae.W_dec.detach().clone(), "offsets_before": sae.b_act})
        return refit(sae, rows, *args, **kwargs)

    monkeypatch.setattr(refit_window, "refit_decoder", recording)
    return seen


def test_the_decoder_is_refitted_once_after_the_last_step_on_the_run_s_last_rows(calls):
    sae = tiny_gba_sae(10, 40)  # the defaults
    trainer = train_sae(sae, SeededBatches(_sample, BATCH, seed=3), _cfg())
    assert len(calls) == 1 and trainer.n_training_samples == STEPS * BATCH
    assert trainer.refit_window.result["rows"] == 3 * BATCH
    assert trainer.refit_window.result["error_after"] < trainer.refit_window.result["error_before"]
    assert torch.equal(calls[0]["rows"], torch.cat(_batches()[-3:]))  # whole steps: the last 3, 192 rows
    last = calls[0]["rows"]
    error = lambda: float((sae(last) - last).pow(2).sum())  # noqa: E731
    assert calls[0]["offsets_before"] is None and sae.b_act is not None  # the refit fitted firing offsets
    with torch.no_grad():
        refitted = error()
        sae.W_dec.data.copy_(calls[0]["before"])
        sae.b_act = None
        assert refitted < 0.9 * error()  # the trained decoder reconstructs the same rows worse


def test_without_the_option_no_row_is_kept_and_nothing_is_refitted(calls):
    trainer = train_sae(tiny_gba_sae(10, 40, decoder_refit=False), SeededBatches(_sample, BATCH, seed=3), _cfg())
    assert trainer.refit_window is None and not calls


def _killed_at(tmp_path, batch: int, checkpoint_every: int, resumed_stream=None) -> tuple[torch.nn.Module, list[str]]:
    """A run killed when asked for ``batch``, then resumed from its last checkpoint (on the same data, or on
    ``resumed_stream``); its SAE and what it said."""
    cfg = _cfg(checkpoint_dir=str(tmp_path), checkpoint_every=checkpoint_every)
    with pytest.raises(Killed):
        train_sae(tiny_gba_sae(10, 40, decoder_refit=True), dies_at(SeededBatches(_sample, BATCH, seed=3), batch), cfg)
    resumed = tiny_gba_sae(10, 40, decoder_refit=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_sae(resumed, resumed_stream or dies_at(SeededBatches(_sample, BATCH, seed=3), -1), cfg)
    return resumed, [str(w.message) for w in caught if "decoder_refit" in str(w.message)]


def _assert_resumed_as_uninterrupted(tmp_path, calls, batch: int, checkpoint_every: int) -> None:
    full = tiny_gba_sae(10, 40, decoder_refit=True)
    train_sae(full, SeededBatches(_sample, BATCH, seed=3), _cfg())
    resumed, said = _killed_at(tmp_path, batch, checkpoint_every)
    assert not said and len(calls) == 2 and torch.equal(calls[0]["rows"], calls[1]["rows"])
    assert torch.equal(calls[1]["rows"], torch.cat(_batches()[-3:]))
    for key, value in full.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-6), key


def test_a_run_resumed_before_its_last_rows_ends_as_an_uninterrupted_one(tmp_path, calls):
    _assert_resumed_as_uninterrupted(tmp_path, calls, 18, checkpoint_every=5)  # resumes after step 15; last rows 21-23


def test_a_run_resumed_inside_its_last_rows_reads_the_earlier_ones_again_and_ends_as_an_uninterrupted_one(
        tmp_path, calls):
    _assert_resumed_as_uninterrupted(tmp_path, calls, 23, checkpoint_every=11)  # resumes after 22 steps: re-reads 21


class _NoSeek:
    """A stream that cannot seek (a generator, say): it yields ``inner``'s batches from where it stands."""

    def __init__(self, inner):
        self.inner = inner

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.inner)


def test_a_run_resumed_inside_its_last_rows_on_a_stream_that_cannot_seek_refits_on_the_rest_and_says_so(
        tmp_path, calls):
    rest = SeededBatches(_sample, BATCH, seed=3)
    rest.seek(22)  # the caller's stream stands where the run stopped
    _, said = _killed_at(tmp_path, 23, checkpoint_every=11, resumed_stream=_NoSeek(rest))
    assert len(said) == 1 and "reads the rows since the run resumed, not all of its last 150" in said[0]
    assert "cannot seek back to the earlier ones" in said[0]
    assert len(calls) == 1 and torch.equal(calls[0]["rows"], torch.cat(_batches()[-2:]))  # the 2 steps it ran


def test_saelens_s_own_trainer_says_once_that_it_keeps_the_trained_decoder():
    sae = tiny_gba_sae(10, 40, decoder_refit=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            sae.training_forward_pass(step_input(torch.relu(torch.randn(64, 10))))
    said = [str(w.message) for w in caught if "decoder_refit" in str(w.message)]
    assert len(said) == 1 and "this trainer keeps the trained decoder" in said[0]


def test_a_wider_sae_than_the_dense_sums_take_is_refitted_on_its_sparse_codes(monkeypatch, calls):
    """Over MAX_LATENTS the run keeps its rows all the same, says nothing, and refits by conjugate gradients."""
    monkeypatch.setattr(decoder_refit, "MAX_LATENTS", 32)
    solved = []
    sparse = decoder_refit.SparseRefitStatistics
    monkeypatch.setattr(decoder_refit, "SparseRefitStatistics", lambda *a, **k: solved.append(a) or sparse(*a, **k))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = train_sae(tiny_gba_sae(10, 40), SeededBatches(_sample, BATCH, seed=3), _cfg())
    assert not [w for w in caught if "decoder_refit" in str(w.message)]  # no "decoder_refit is skipped"
    result = trainer.refit_window.result
    assert len(calls) == 1 and result["rows"] == 3 * BATCH and result["refitted"] == 1
    assert result["error_after"] < result["error_before"] and trainer.sae.b_act is not None
    assert len(solved) == 1 + decoder_refit.REALLOCATIONS and solved[0][:2] == (40, 10)  # each fit on sparse codes


def test_a_run_whose_checked_refit_reconstructs_held_out_rows_no_better_keeps_its_sae(calls, monkeypatch):
    sae = tiny_gba_sae(10, 40)
    kept, read = {}, []
    error = refit_check.held_out_error

    def worse(one, rows, batch_size):  # the trained SAE's reading as it is, the refitted copy's twice it
        if not read:
            kept.update(W_dec=sae.W_dec.detach().clone(), b_enc=sae.b_enc.detach().clone(), rows=len(rows))
        read.append(error(one, rows, batch_size) * (2 if read else 1))
        return read[-1]

    monkeypatch.setattr(refit_check, "TRUSTED_FIRINGS", 10**9)  # every refit checked
    monkeypatch.setattr(refit_check, "held_out_error", worse)
    with pytest.warns(UserWarning, match=r"decoder_refit is skipped: the run's last 192 rows give its live latents "
                                         r"\d+\.\d\d firings per input each, and a copy refitted without every 8th "
                                         r"reconstructed those rows no better than the trained SAE"):
        trainer = train_sae(sae, SeededBatches(_sample, BATCH, seed=3), _cfg())
    assert len(calls) == 1 and kept["rows"] == 24 and 0 < read[0] < read[1]  # every 8th of 192 rows
    result = trainer.refit_window.result
    assert result["refitted"] == 0 and result["checked"] == 1 and result["error_after"] == result["error_before"]
    assert (result["held_out_trained"], result["held_out_fitted"]) == tuple(read) and result["rows"] == 192
    assert torch.equal(sae.W_dec, kept["W_dec"]) and torch.equal(sae.b_enc, kept["b_enc"]) and sae.b_act is None


def _long_run(d_in: int, d_sae: int) -> SimpleNamespace:
    """What ``RefitWindow.for_run`` reads of a trainer: a run of 10^9 samples of a d_in x d_sae SAE with the refit."""
    cfg = SimpleNamespace(decoder_refit=True, d_in=d_in, d_sae=d_sae)
    return SimpleNamespace(sae=SimpleNamespace(cfg=cfg), cfg=SimpleNamespace(total_training_samples=10**9))


def test_a_long_run_keeps_rows_for_a_wide_sae_whatever_its_inputs():
    widest = 4 * decoder_refit.MAX_LATENTS
    for d_in, rows in ((128, decoder_refit.ROWS), (512, decoder_refit.ROWS), (768, 174_762), (2304, 58_254)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "decoder_refit is skipped": the refit decides at its end
            window = refit_window.RefitWindow.for_run(_long_run(d_in, widest))
        assert window is not None and window.rows == rows  # wider inputs keep fewer rows (512 MiB)
