"""The CLI commands and the SAELens baselines in the shared harness."""

import functools
import json

import pytest
import torch
from sae_lens import SAE

from gba_lens import cli
from gba_lens.training.data import SeededBatches, load_activations, save_activations
from gba_lens.training.methods import METHODS, build_sae
from gba_lens.training.train import TrainConfig, train_sae


@pytest.mark.parametrize("method, params", [
    ("gba", {}), ("ba", {"target": 0.05}), ("topk", {"k": 4}), ("batchtopk", {"k": 4.0}),
    ("l1", {"l1_coefficient": 0.5}), ("jumprelu", {"l0_coefficient": 0.1}),
])
def test_every_method_trains_and_exports_to_saelens(tmp_path, method, params):
    torch.manual_seed(0)
    sae = build_sae(method, 8, 32, **params)
    train_sae(sae, SeededBatches(lambda n: torch.relu(torch.randn(n, 8)), 64), TrainConfig(total_samples=64 * 10, batch_size=64))
    sae.eval()
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    x = torch.relu(torch.randn(16, 8))
    if method != "batchtopk":  # BatchTopK's saved JumpReLU threshold differs from its training gate by design
        assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-5)
    assert set(METHODS) >= {method}


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method"):
        build_sae("sparse-magic", 8, 16)


def test_recover_command_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "rec"
    code = cli.main(["recover", "--preset", "paper-toy", "--samples", "10240", "--width", "64",
                     "--seeds", "0", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| GBA, range covers f (0.1 … 0.03) |" in printed and "paper τ=0.9" in printed
    rows = json.loads((out / "paper_toy.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["TopK K=20", "TopK K=30", "TopK K=50", "GBA, range covers f (0.1 … 0.03)",
                                           "GBA, range misses f (0.01 … 1e-4)"]
    assert all(0.0 <= r["frr_08"] <= 1.0 for r in rows)
    assert (out / "paper_toy_frr.png").stat().st_size > 1000


def test_recover_zipf_command_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "zipf"
    code = cli.main(["recover", "--preset", "zipf", "--quick", "--samples", "4096", "--seeds", "0",
                     "--workers", "1", "--out", str(out)])
    assert code == 0
    assert "| A: 256 feats, d 32, width 256 |" in capsys.readouterr().out
    (row,) = json.loads((out / "zipf.json").read_text())["rows"]
    assert all(0.0 <= row[k] <= 1.0 for k in ("gba_mcc", "gba_low_mcc", "l1_mcc", "btk_mcc"))
    assert row["l1_best"].startswith("L1 coef")
    assert (out / "zipf_mcc.png").stat().st_size > 1000


def test_train_activations_command(tmp_path, capsys):
    acts = torch.relu(torch.randn(4096, 12)) * 3
    path = tmp_path / "acts.safetensors"
    save_activations(path, acts, hook_name="blocks.0.hook_resid_pre")
    assert torch.equal(load_activations(path), acts)
    code = cli.main(["train-activations", "--activations", str(path), "--d_sae", "48", "--n_groups", "4",
                     "--batch_size", "256", "--epochs", "2", "--out", str(tmp_path / "run"), "--checkpoint_every", "8"])
    assert code == 0
    out = capsys.readouterr().out
    assert "NMSE" in out and "group  target" in out
    sae = SAE.load_from_disk(tmp_path / "run" / "sae")
    assert sae.cfg.d_sae == 48 and sae.cfg.architecture() == "jumprelu"


def test_load_activations_rejects_bad_files(tmp_path):
    bad = tmp_path / "acts.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_activations(bad)
    with pytest.raises(ValueError, match="safetensors file or a SAELens cache"):
        pickle_like = tmp_path / "acts.pt"
        pickle_like.write_bytes(b"\x80\x04")
        load_activations(pickle_like)
    with pytest.raises(FileNotFoundError):
        load_activations(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_give_the_same_numbers_as_one_process(start_method, monkeypatch, capfd):
    """Jobs seed themselves: two single-threaded worker processes reproduce an in-process run,
    whether the workers are forked (the default with one thread each) or spawned. The workers
    draw no training bars of their own (the parent's bar counts the jobs)."""
    from gba_lens.synthetic import experiments as ex

    monkeypatch.setattr(ex, "run_jobs", functools.partial(ex.run_jobs, start_method=start_method))

    setup = ex.PaperToySetup(width=48, samples=4096, batch_size=256, seeds=(0, 1), eval_samples=2000)
    methods = [ex.MethodSpec("GBA", "gba", {}), ex.MethodSpec("TopK K=5", "topk", {"k": 5})]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each worker uses
    try:
        rows_here, records_here = ex.run_paper_toy(setup, methods, progress=False, workers=1)
    finally:
        torch.set_num_threads(threads)
    assert "Training SAE" in capfd.readouterr().err  # SAELens's bar, in this process
    rows_pool, records_pool = ex.run_paper_toy(setup, methods, progress=False, workers=2)
    assert "Training SAE" not in capfd.readouterr().err
    assert [(r.label, r.seed) for r in records_here] == [(r.label, r.seed) for r in records_pool]
    for a, b in zip(records_here, records_pool):
        assert a.result == b.result
        assert torch.equal(a.directions, b.directions) and torch.equal(a.frequencies, b.frequencies)
        assert b.sae is None  # the SAE stays in the worker
    assert rows_here == [{**r, "seconds": h["seconds"]} for r, h in zip(rows_pool, rows_here)]
    assert "consistency_1" in rows_pool[0]


def test_a_cached_stream_gives_the_batches_of_a_fresh_one():
    calls = []

    def sample(n):
        calls.append(n)
        return torch.randn(n, 6)

    fresh = SeededBatches(sample, 32, seed=4)
    expected = [next(fresh) for _ in range(5)]
    cache: list[torch.Tensor] = []
    first = SeededBatches(sample, 32, seed=4, cache=cache)
    assert all(torch.equal(next(first), e) for e in expected[:3]) and len(cache) == 3
    first.seek(4)  # out of order: drawn, not stored
    assert torch.equal(next(first), expected[4]) and len(cache) == 3
    calls.clear()
    second = SeededBatches(sample, 32, seed=4, cache=cache)
    got = [next(second) for _ in range(5)]
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    assert calls == [32, 32] and len(cache) == 5  # only batches 3 and 4 were sampled


def test_methods_sharing_a_stream_get_the_numbers_of_fresh_streams(monkeypatch):
    """The jobs of one seed share its batches in a process; no method writes to its input batch,
    so every record equals the one from a stream of its own."""
    from gba_lens.synthetic import experiments as ex
    from gba_lens.synthetic.paper_model import SparseMixtureConfig, SparseMixtureModel

    specs = [ex.MethodSpec("GBA", "gba"), ex.MethodSpec("TopK", "topk", {"k": 5}),
             ex.MethodSpec("BatchTopK", "batchtopk", {"k": 5.0}),
             ex.MethodSpec("L1", "l1", {"l1_coefficient": 0.3}),
             ex.MethodSpec("JumpReLU", "jumprelu", {"l0_coefficient": 0.1})]
    train = TrainConfig(total_samples=256 * 8, batch_size=256)
    jobs = [ex.Job(spec, SparseMixtureModel, (SparseMixtureConfig(seed=0), "cpu"), 48, train, 1, 1000)
            for spec in specs]
    handed_out: list[list[torch.Tensor]] = []
    keep = ex._stream_cache
    monkeypatch.setattr(ex, "_stream_cache", lambda key: handed_out.append(keep(key)) or handed_out[-1])
    fresh = [ex.run_job(job) for job in jobs]
    assert not handed_out
    shared = ex.run_jobs(jobs, workers=1, progress=False)
    assert [r.result for r in shared] == [r.result for r in fresh]
    assert len(handed_out) == 5 and all(cache is handed_out[0] for cache in handed_out)
    model = SparseMixtureModel(SparseMixtureConfig(seed=0))
    assert len(handed_out[0]) == 8
    assert all(torch.equal(b, e) for b, e in zip(handed_out[0], SeededBatches(model.sample, 256, seed=1)))
    assert not ex._STREAMS  # released when the jobs are done


def _selection_before_and_after_large_decoder_norms(sae, x):
    """Active latents of ``x`` before and after a few latents get large decoder norms."""
    before = sae.encode_with_hidden_pre(x)[0] != 0
    with torch.no_grad():
        sae.W_dec[:8] *= 50.0
    return before, sae.encode_with_hidden_pre(x)[0] != 0


@pytest.mark.parametrize("method, params", [
    ("gba", {}), ("topk", {"k": 4}), ("batchtopk", {"k": 4.0}), ("l1", {"l1_coefficient": 0.5}),
    ("jumprelu", {"l0_coefficient": 0.1}),
])
def test_zero_pre_bias_keeps_b_dec_at_zero_while_the_rest_trains(method, params):
    """The paper-toy rows run without a pre-bias: b_dec stays exactly 0 through training (GBA
    does not centre its inputs), while the other weights do train."""
    torch.manual_seed(0)
    sae = build_sae(method, 8, 32, zero_pre_bias=True, **params)
    w_enc = sae.W_enc.detach().clone()
    data = SeededBatches(lambda n: torch.relu(torch.randn(n, 8)) + 3.0, 64)  # a large offset
    train_sae(sae, data, TrainConfig(total_samples=64 * 20, batch_size=64))
    assert torch.count_nonzero(sae.b_dec) == 0
    assert not torch.allclose(sae.W_enc, w_enc)
    trained = build_sae(method, 8, 32, **params)
    train_sae(trained, data, TrainConfig(total_samples=64 * 20, batch_size=64))
    assert torch.count_nonzero(trained.b_dec) > 0  # without the option b_dec does move


def test_paper_toy_rows_have_no_pre_bias_and_cover_f():
    from gba_lens.synthetic import experiments as ex

    specs = ex.paper_toy_methods()
    assert all(spec.params.get("zero_pre_bias") is True for spec in specs)
    covering = next(s for s in specs if s.label.startswith("GBA, range covers f"))
    assert covering.params["highest_target"] > 11.5 / 128 > covering.params["lowest_target"]
    assert [s.label for s in ex.paper_toy_methods((0.1, 0.001))][3] == "GBA, range covers f (0.1 … 0.001)"


def test_toy_and_zipf_topk_baselines_select_on_plain_pre_activations():
    """The paper's TopK picks the top k of W_enc x + b_enc; SAELens's default also weighs each
    latent by its decoder norm. The comparison rows must not depend on decoder norms."""
    from gba_lens.synthetic import experiments as ex

    specs = [s for s in ex.paper_toy_methods() if s.method == "topk"]
    specs += [s for s in ex.zipf_methods(true_l0=4.0) if s.method == "batchtopk"]
    assert len(specs) == 4
    x = torch.randn(64, 16)
    for spec in specs:
        torch.manual_seed(0)
        before, after = _selection_before_and_after_large_decoder_norms(
            build_sae(spec.method, 16, 64, **{**spec.params, "k": 4}), x)
        assert torch.equal(after, before), spec.label
    # SAELens's default selection does move to the large-norm latents (what the rows avoid).
    torch.manual_seed(0)
    before, after = _selection_before_and_after_large_decoder_norms(build_sae("topk", 16, 64, k=4), x)
    assert after[:, :8].sum() > before[:, :8].sum()
