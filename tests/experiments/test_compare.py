"""``gba-lens compare`` on tiny configurations: the pool cache, every method, the sweeps, the files."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch

from gba_lens.experiments.compare import CompareConfig, run_compare
from gba_lens.experiments.compare import methods as M
from gba_lens.experiments.compare import report
from gba_lens.experiments.compare.lm_frontier import LMScale, defaults_against_frontiers, run_lm_frontier
from gba_lens.experiments.compare.pool import SynthScale, load_or_build_pool, pool_key
from gba_lens.experiments.compare.synthbench import SYNTH_METHODS, run_synthbench

TINY = SynthScale("tiny", num_features=96, hidden_dim=12, width=24, roots=1, samples=3072, pool_samples=3072,
                  eval_samples=512, batch_size=256, orthogonalization_steps=5)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_pool_is_cached_keyed_by_config_and_reused(tmp_path):
    first = load_or_build_pool(TINY, tmp_path)
    assert not first.from_cache and first.directory is not None
    assert first.train is not None and first.train.shape == (TINY.pool_samples, TINY.hidden_dim)
    again = load_or_build_pool(TINY, tmp_path)
    assert again.from_cache and again.directory == first.directory
    assert torch.equal(again.train, first.train)
    assert torch.equal(again.eval_features.to_dense(), first.eval_features.to_dense())
    assert torch.equal(again.model.feature_dict.feature_vectors, first.model.feature_dict.feature_vectors)
    assert again.true_l0 == pytest.approx(first.true_l0)
    other = dataclasses.replace(TINY, num_features=100)
    assert pool_key(other, 0) != pool_key(TINY, 0) != pool_key(TINY, 1)
    assert load_or_build_pool(other, tmp_path).directory != first.directory


def test_eval_replay_returns_the_stored_rows_in_order(tmp_path):
    pool = load_or_build_pool(TINY, tmp_path)
    replay = pool.replay()
    dense = pool.eval_features.to_dense()
    assert torch.equal(replay.sample(100), dense[:100])
    assert torch.equal(replay.sample(50), dense[100:150])
    with pytest.raises(ValueError, match="evaluation samples"):
        replay.sample(TINY.eval_samples)


def test_synthbench_every_method_trains_sweeps_bracket_true_l0_and_files_are_written(tmp_path):
    cfg = CompareConfig(preset="synthbench", quick=True, seeds=[0, 1], out=str(tmp_path / "out"))
    results = run_synthbench(cfg, progress=False, scale=TINY)
    true_l0 = results["true_l0"]
    assert {r["method"] for r in results["runs"]} == set(SYNTH_METHODS)
    for run in results["runs"]:
        for key in ("mcc", "f1", "precision", "recall", "uniqueness", "explained_variance", "l0", "dead_fraction"):
            assert math.isfinite(run[key]), (run["method"], key)
        assert 0 <= run["mcc"] <= 1 and 0 <= run["dead_fraction"] <= 1
    for method in ("batchtopk", "matryoshka"):  # k at 0.5x, 1x, 2x the true L0
        ks = sorted(p["knob_value"] for p in results["points"] if p["method"] == method)
        assert ks[0] < true_l0 < ks[-1] and true_l0 in ks
    assert all(p["seeds"] == 2 for p in results["points"])
    assert {r["method"] for r in results["at_true_l0"]} == set(SYNTH_METHODS)
    results["config"] = vars(cfg)
    files = report.write(results, tmp_path / "out")
    text = (tmp_path / "out" / "compare_synthbench.md").read_text()
    assert "Matryoshka BatchTopK" in text and "MCC" in text and "gba-lens compare --preset synthbench" in text
    assert json.loads((tmp_path / "out" / "compare_synthbench.json").read_text())["true_l0"] == pytest.approx(true_l0)
    assert (tmp_path / "out" / "compare_synthbench.png").stat().st_size > 0
    assert set(files) == {"md", "json", "png"}


def test_the_run_journal_resumes_only_runs_of_the_same_settings_and_code(tmp_path, monkeypatch):
    """A comparison run again reads its finished runs back from its journal; after a change of code (or of
    SAELens or torch) it trains them again and says how many it left."""
    import gba_lens.experiments.compare.synthbench as synthbench

    trained = []
    real = synthbench._run
    monkeypatch.setattr(synthbench, "_run", lambda variant, *a: trained.append(variant.key) or real(variant, *a))
    cfg = CompareConfig(preset="synthbench", quick=True, methods=["batchtopk"], seeds=[0], out=str(tmp_path))
    first = run_synthbench(cfg, progress=False, scale=TINY)
    count = len(trained)
    assert count == 3  # k at 0.5x, 1x and 2x the true L0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run_synthbench(cfg, progress=False, scale=TINY)
    assert not [w for w in caught if "runs were made with" in str(w.message)]  # every run is this code's
    assert len(trained) == count and again["runs"] == first["runs"]
    assert len(synthbench.code_version()) == 16 and synthbench.code_version() == synthbench.code_version()
    monkeypatch.setattr(synthbench, "code_version", lambda: "another version")
    with pytest.warns(UserWarning, match=f"{count} of its {count} runs were made with other settings or another "
                                         "version of gba_lens"):
        run_synthbench(cfg, progress=False, scale=TINY)
    assert len(trained) == 2 * count


def test_penalty_grid_is_extended_until_its_l0s_bracket_the_target():
    # L0 falls as the coefficient grows.
    assert M.extend_grid([1, 3], [20, 12], l0_low=5, l0_high=10) == pytest.approx(9)
    assert M.extend_grid([1, 3], [4, 2], l0_low=5, l0_high=10) == pytest.approx(1 / 3)
    assert M.extend_grid([1, 3, 9], [20, 8, 3], l0_low=5, l0_high=10) is None
    assert M.extend_grid([1, 3, 9], [30, 21, 20.5], l0_low=5, l0_high=10) is None  # saturated


def test_interpolation_at_an_l0_in_log_space():
    points = [{"l0": 4.0, "mcc": 0.4}, {"l0": 16.0, "mcc": 0.8}]
    assert M.interpolate_at_l0(points, "mcc", 8.0) == pytest.approx(0.6)
    assert M.interpolate_at_l0(points, "mcc", 32.0) is None
    assert M.nearest_to_l0(points, 10.0)["l0"] == 16.0


def test_interpolation_at_an_l0_in_l0_itself():
    points = [{"l0": 4.0, "mcc": 0.4}, {"l0": 16.0, "mcc": 0.8}]
    assert M.interpolate_at_l0(points, "mcc", 8.0, log_l0=False) == pytest.approx(0.4 + 0.4 * 4 / 12)
    assert M.interpolate_at_l0(points, "mcc", 2.0, log_l0=False) is None


def test_every_variant_builds_saelens_class_and_converts_to_inference():
    for method in M.ALL_METHODS:
        knob = {"gba": 1.0, "jumprelu": 1.0, "l1": 1.0}.get(method, 4.0)
        sae = M.build(M.Variant(method, knob), d_in=8, width=32, device="cpu")
        inference = M.to_inference(sae, hook_name="blocks.0.hook_resid_pre")
        x = torch.randn(5, 8)
        assert inference.decode(inference.encode(x)).shape == (5, 8)
        assert inference.cfg.metadata.hook_name == "blocks.0.hook_resid_pre"
    assert M.matryoshka_widths(256) == [8, 32, 128, 256]


def test_gba_defaults_is_one_point_at_the_defaults_and_the_sweep_is_the_papers_rule():
    (point,) = M.defaults_point()
    sae = M.build(point, d_in=8, width=32, device="cpu")
    assert sae.cfg.find_l0 and sae.cfg.valley_thresholds  # the targets' level found from the data
    for variant in M.gba_sweep([0.5, 1.0]):
        sae = M.build(variant, d_in=8, width=32, device="cpu")
        assert not sae.cfg.find_l0 and not sae.cfg.valley_thresholds  # fixed targets, scaled
    runs = [{"hook": "h", "method": "gba_defaults", "l0": 8.0, "ce_loss_score": 0.95, "explained_variance": 0.90},
            {"hook": "h", "method": "topk", "l0": 4.0, "ce_loss_score": 0.90, "explained_variance": 0.80},
            {"hook": "h", "method": "topk", "l0": 16.0, "ce_loss_score": 0.98, "explained_variance": 0.94},
            {"hook": "h", "method": "l1", "l0": 20.0, "ce_loss_score": 0.99, "explained_variance": 0.95}]
    topk, l1 = defaults_against_frontiers(runs)
    assert (topk["label"], topk["l0"]) == ("TopK", 8.0)
    assert topk["ce_loss_score_gap"] == pytest.approx(0.95 - 0.94)  # TopK at L0 8: halfway in log L0
    assert topk["explained_variance_gap"] == pytest.approx(0.90 - 0.87)
    assert l1["ce_loss_score_gap"] is None  # L0 8 is outside L1's one point


def test_gba_knob_scales_the_default_range_and_a_range_given_in_the_variant_wins():
    scaled = M.sae_params(M.Variant("gba", 2.0), 64)
    assert (scaled["highest_target"], scaled["lowest_target"]) == pytest.approx((0.2, 2e-3))
    given = M.sae_params(M.Variant("gba", 2.0, (("lowest_target", 1e-4), ("target_l0", 8.0))), 64)
    assert (given["highest_target"], given["lowest_target"], given["target_l0"]) == pytest.approx((0.2, 1e-4, 8.0))


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="preset"):
        CompareConfig(preset="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="full-16k"):
        CompareConfig(preset="lm", full_16k=True)
    assert CompareConfig().resolved_seeds() == [0, 1, 2]
    assert CompareConfig(quick=True).resolved_seeds() == [0]


def test_lm_preset_on_a_tiny_cache_gives_a_frontier_per_hook(tmp_path):
    scale = LMScale(cache_tokens=1024, train_tokens=1024, eval_tokens=256, batch_size=256, width_multiple=1,
                    ks=(8, 16), gba_scales=(1.0,), penalty_grids=(("l1", (3.0,)),), max_extensions=0,
                    eval_batch_prompts=2)
    cfg = CompareConfig(preset="lm", methods=["gba_defaults", "gba", "batchtopk", "l1"], out=str(tmp_path / "out"))
    results = run_lm_frontier(cfg, progress=False, scale=scale)
    hooks = list(results["hooks"])
    assert len(hooks) == 2 and any("resid" in h for h in hooks) and any("mlp_out" in h for h in hooks)
    for hook in hooks:
        runs = [r for r in results["runs"] if r["hook"] == hook]
        assert {r["method"] for r in runs} == {"gba_defaults", "gba", "batchtopk", "l1"}
        assert [r["method"] for r in results["defaults_against_frontiers"] if r["hook"] == hook] == ["gba", "batchtopk", "l1"]
        for r in runs:
            for key in ("ce_loss_score", "kl_div_with_sae", "explained_variance", "l0", "dead_fraction",
                        "dense_fraction"):
                assert math.isfinite(r[key]), (hook, r["method"], key)
        assert sum(r["hook"] == hook for r in results["frontier_at"]) == 3  # the swept methods
        assert all(r["l0_note"] is None for r in runs if r["method"] not in ("gba_defaults", "gba"))
    # The cache is made once per hook and reused by a second run.
    again = run_lm_frontier(dataclasses.replace(cfg, methods=["gba"]), progress=False, scale=scale)
    assert {h: i["cache"] for h, i in again["hooks"].items()} == {h: i["cache"] for h, i in results["hooks"].items()}
    results["config"] = vars(cfg)
    report.write(results, tmp_path / "out")
    text = (tmp_path / "out" / "compare_lm.md").read_text()
    assert all(h in text for h in hooks) and "CE loss recovered" in text and "GBA at its defaults minus" in text
    assert (tmp_path / "out" / "compare_lm.png").stat().st_size > 0


def test_run_compare_writes_the_report(tmp_path, monkeypatch):
    import gba_lens.experiments.compare.synthbench as synthbench

    monkeypatch.setattr(synthbench, "resolve_scale", lambda cfg: TINY)
    cfg = CompareConfig(preset="synthbench", methods=["gba_defaults", "gba", "batchtopk"], seeds=[0], out=str(tmp_path))
    results = run_compare(cfg, progress=False)
    assert set(results["files"]) == {"md", "json", "png"}
    assert [r["method"] for r in results["at_true_l0"]] == ["gba_defaults", "gba", "batchtopk"]
    assert "GBA (defaults)" in (tmp_path / "compare_synthbench.md").read_text()
    assert (tmp_path / "compare_synthbench.md").exists()


def test_wandb_logging_of_a_comparison_is_offline_and_never_raises(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import wandb

    from gba_lens.experiments.compare.report import log_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    png = tmp_path / "curves.png"
    plt.figure()
    plt.savefig(png)
    plt.close("all")
    results = {"preset": "synthbench", "runs": [{"method": "gba", "mcc": 0.5, "l0": 2.0}],
               "at_true_l0": [{"method": "gba", "mcc": 0.5}], "files": {"png": str(png)}}
    assert log_wandb(results, "gba-lens-test") is True
    assert wandb.run is None  # finished

    def broken(*args, **kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "Table", broken)
    with pytest.warns(UserWarning, match="no W&B today"):
        assert log_wandb(results, "gba-lens-test") is False
    assert wandb.run is None


def test_a_gba_run_whose_l0_had_not_settled_is_reported_and_warned_not_silenced(tmp_path, monkeypatch):
    import gba_lens.experiments.compare.synthbench as synthbench
    from gba_lens.data import TensorBatches
    from gba_lens.training.train import TrainConfig

    # The trainer's end-of-training line comes back from each run (quiet_trainer keeps it from warning mid-run).
    torch.manual_seed(0)
    rows = torch.randn(4096, 12)
    train = TrainConfig(total_samples=2560, batch_size=64, lr=1e-3, device="cpu")
    asked = M.train_variant(M.Variant("gba", 1.0, (("target_l0", 20.0),)), TensorBatches(rows, 64, seed=0), 12, 24,
                            train, 0)
    assert asked.l0_note is not None and asked.l0_note.startswith("target_l0=20 not reached")
    topk = M.train_variant(M.Variant("topk", 4.0), TensorBatches(rows, 64, seed=0), 12, 24, train, 0)
    assert topk.l0_note is None and topk.seconds > 0

    # A comparison lists such runs in its report and warns once it is written; settled runs are not listed.
    scale = dataclasses.replace(TINY, samples=12288, pool_samples=12288)  # GBA's L0 still falling at the end
    monkeypatch.setattr(synthbench, "resolve_scale", lambda cfg: scale)
    cfg = CompareConfig(preset="synthbench", methods=["gba_defaults", "batchtopk"], seeds=[0], out=str(tmp_path))
    with pytest.warns(UserWarning, match=r"compare --preset synthbench: 1 GBA run ended before its L0 settled "
                                         r"\(listed in .*compare_synthbench\.md\):\n  GBA \(defaults\), seed 0: "
                                         r"GBA's L0 was still falling") as caught:
        results = run_compare(cfg, progress=False)
    assert sum("GBA run" in str(w.message) for w in caught) == 1  # one warning, a line per run
    notes = {r["method"]: r["l0_note"] for r in results["runs"]}
    assert notes["gba_defaults"].startswith("GBA's L0 was still falling") and notes["batchtopk"] is None
    text = (tmp_path / "compare_synthbench.md").read_text()
    section = text.split("## GBA runs whose L0 had not settled when training ended")[1]
    assert section.count("\n- ") == 1 and "- GBA (defaults), seed 0: GBA's L0 was still falling" in section
    stored = json.loads((tmp_path / "compare_synthbench.json").read_text())
    assert [r["l0_note"] for r in stored["runs"]] == [r["l0_note"] for r in results["runs"]]
    settled = {**results, "runs": [{**r, "l0_note": None} for r in results["runs"]]}
    assert report.unsettled_runs(settled) == [] and "had not settled" not in report.synthbench_markdown(settled, "c")
