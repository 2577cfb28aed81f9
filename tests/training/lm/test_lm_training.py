"""``gba-lens train`` / ``train_gba_on_model``: GBA SAEs on language-model hooks, offline.

Every run here uses the stdlib LM and tiny budgets (a few optimiser steps): the tests check the
plumbing (SAELens runners with GBATrainer, multi-hook, cache, evaluation, saving, W&B, CLI) and
that the numbers reported are the numbers of the saved SAE, not that the SAEs are good.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from sae_lens import SAE
from sae_lens.training.activations_store import ActivationsStore

from gba_lens.adapters import UnknownHookNameError
from gba_lens.models.stdlib_lm import load_stdlib_lm
from gba_lens.saes import decoder_refit
from gba_lens.training.lm import (
    LMCacheConfig,
    LMTrainConfig,
    cache_lm_activations,
    train_gba_on_model,
)
from gba_lens.training.lm.sources import LoadedModel, load_tokens, validate_hooks

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

HOOK = "blocks.1.hook_resid_pre"
TINY = dict(
    training_tokens=4096, batch_tokens=1024, width=[64], context_size=32, eval_tokens=256,
    eval_batch_prompts=4, store_batch_prompts=8, buffer_batches=2, device="cpu",
)


@pytest.fixture(scope="module")
def run(model, tmp_path_factory):
    """One small end-to-end run shared by several tests."""
    out = tmp_path_factory.mktemp("run")
    cfg = LMTrainConfig(hook=[HOOK], out=str(out), n_groups=4, **{**TINY, "training_tokens": 8192})
    return train_gba_on_model(cfg, model=model)


def test_end_to_end_results_json(run):
    payload = json.loads(run.results_path.read_text())
    assert payload["model_name"] == "gba-lens/stdlib-lm" and payload["training_tokens"] == 8192
    assert payload["tokens_per_second"] > 0
    assert set(payload["l0_unsettled"]) == {HOOK}  # the end-of-run L0 check of each SAE (a line or None)
    res = payload["saes"][HOOK]
    m = res["metrics"]
    for key in ("ce_loss_score", "ce_loss_with_sae", "ce_loss_without_sae", "ce_loss_with_ablation",
                "kl_div_with_sae", "kl_div_score", "explained_variance", "mse", "l0", "dead_fraction"):
        assert key in m and math.isfinite(m[key]), key
    # Zero-ablating the residual stream wrecks the model; even a barely trained SAE beats that.
    assert m["ce_loss_with_ablation"] > m["ce_loss_with_sae"] > m["ce_loss_without_sae"] > 0
    expected = (m["ce_loss_with_ablation"] - m["ce_loss_with_sae"]) / (m["ce_loss_with_ablation"] - m["ce_loss_without_sae"])
    assert m["ce_loss_score"] == pytest.approx(expected, rel=1e-6)
    assert 0 < m["ce_loss_score"] <= 1 and 0 < m["explained_variance"] < 1
    assert 0 < m["l0"] <= 64 and 0 <= m["dead_fraction"] <= 1
    # GBA groups: the geometric targets' shape (HTF ... LTF), their level found from the data
    # (find_l0, the default: scaled together), one measured frequency per group
    targets = res["group_targets"]
    assert [b / a for a, b in zip(targets, targets[1:])] == pytest.approx([0.01 ** (1 / 3)] * 3, rel=1e-4)
    assert targets[0] != pytest.approx(0.1, rel=1e-3)
    assert len(res["group_frequencies"]) == 4 and all(0 <= f <= 1 for f in res["group_frequencies"])
    # the mean of the group frequencies is the mean latent density (equal-sized groups)
    assert sum(res["group_frequencies"]) / 4 == pytest.approx(m["mean_feature_density"], rel=1e-5)
    assert m["l0"] == pytest.approx(64 * m["mean_feature_density"], rel=1e-4)
    assert (run.out_dir / "results.md").read_text().startswith("| SAE | width | CE loss recovered")
    assert run.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_sae_is_plain_saelens_and_matches_training_sae(run, model):
    sae_dir = run.out_dir / HOOK
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"  # a stock SAELens architecture: no gba_lens needed
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["d_in"] == 128 and cfg["d_sae"] == 64
    assert (sae_dir / "sparsity.safetensors").exists() and (sae_dir / "runner_cfg.json").exists()
    loaded = SAE.load_from_disk(str(sae_dir))
    assert type(loaded).__name__ == "JumpReLUSAE"
    tokens = torch.randint(2, 4096, (4, 32), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    x = cache[HOOK]
    trained = run.training_saes[HOOK].eval()
    with torch.no_grad():
        feats, pre = trained.encode_with_hidden_pre(x)  # pre = u + b: a latent fires iff pre > 0
        # Folding the input scale changes rounding, so a latent within float error of its
        # threshold may flip; every other latent must agree.
        away = pre.abs() > 1e-4
        assert away.float().mean() > 0.99
        for sae in (loaded, run.saes[HOOK]):
            torch.testing.assert_close(sae.encode(x)[away], feats[away], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(sae.decode(feats), trained.decode(feats), rtol=1e-4, atol=1e-5)
    # checkpoints are safetensors + JSON, never a pickle
    assert not list(run.out_dir.rglob("*.pt")) and not list(run.out_dir.rglob("*.pkl"))


def test_unknown_hook_fails_before_training_with_close_matches(model, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(UnknownHookNameError, match=r"blocks\.1\.hook_resid_pre") as err:
        train_gba_on_model(LMTrainConfig(hook=["blocks.1.hook_resid_pree"], out=str(out), **TINY), model=model)
    assert isinstance(err.value, KeyError) and "Close matches" in str(err.value)
    assert not out.exists()  # nothing was trained or written
    bridge = load_stdlib_lm("bridge")
    assert validate_hooks(bridge, [HOOK, "blocks.0.hook_out"]) == {HOOK: 128, "blocks.0.hook_out": 128}
    with pytest.raises(UnknownHookNameError, match="Close matches"):
        validate_hooks(bridge, ["blocks.1.hook_resid_prex"])  # the bridge itself would ignore it
    assert validate_hooks(model, ["blocks.0.attn.hook_z", "blocks.0.mlp.hook_post"]) == {
        "blocks.0.attn.hook_z": 128, "blocks.0.mlp.hook_post": 512}


def test_multi_hook_trains_several_saes_from_one_pass(model, tmp_path, monkeypatch):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    filters: list[tuple[str, ...]] = []
    original = model.run_with_cache

    def spy(*args, **kwargs):
        names = kwargs.get("names_filter")
        filters.append(tuple(names) if isinstance(names, (list, tuple)) else (names,))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "run_with_cache", spy)
    errors, resolved = {}, decoder_refit.resolved_refit_error  # the refit's error, as each SAE's refit reads it

    def recording(sae):
        return errors.setdefault(sae.cfg.metadata.hook_name, resolved(sae))

    monkeypatch.setattr(decoder_refit, "resolved_refit_error", recording)
    res = train_gba_on_model(
        LMTrainConfig(hook=hooks, out=str(tmp_path), checkpoint_every=4, **{**TINY, "width": [32]}), model=model
    )
    assert errors == {hooks[0]: "relative", hooks[1]: "absolute"}  # each SAE's hook, known before its refit
    assert tuple(hooks) in filters  # both hooks captured by the same forward pass
    for hook in hooks:  # SAELens's multi-SAE checkpoint layout, written by GBATrainer: no pickle
        assert (tmp_path / "checkpoints" / "step_000000004" / hook / "trainer_state.safetensors").exists()
    assert not list((tmp_path / "checkpoints").rglob("*.pt"))
    assert set(res.saes) == set(hooks)
    assert res.saes["blocks.1.mlp.hook_post"].cfg.d_in == 512 and res.saes[hooks[0]].cfg.d_in == 128
    payload = json.loads(res.results_path.read_text())
    for hook in hooks:
        assert payload["saes"][hook]["hook_name"] == hook
        assert json.loads((tmp_path / hook / "cfg.json").read_text())["metadata"]["hook_name"] == hook
        assert 0 < payload["saes"][hook]["metrics"]["l0"] <= 32


def test_cache_once_then_train_several_widths_without_the_model(model, tmp_path, monkeypatch):
    import datasets

    cache = cache_lm_activations(
        LMCacheConfig(hook=HOOK, tokens=4096, context_size=32, store_batch_prompts=8, out=str(tmp_path / "acts")),
        model=model,
    )
    ds = datasets.load_from_disk(str(cache)).with_format("torch")  # a plain SAELens activation cache
    assert set(ds.column_names) == {HOOK, "token_ids"}
    acts = ds[:][HOOK]
    assert acts.shape == (128, 32, 128) and torch.isfinite(acts).all()
    _, ref = model.run_with_cache(ds[:2]["token_ids"].long(), names_filter=HOOK)
    torch.testing.assert_close(acts[:2], ref[HOOK], rtol=1e-4, atol=1e-4)  # cached = recomputed
    info = json.loads((cache / "gba_lens_cache.json").read_text())
    assert info["hook_name"] == HOOK and info["d_in"] == 128 and info["tokens"] == 4096

    def no_model_pass(*args, **kwargs):
        raise AssertionError("training from the cache must not run the model for activations")

    monkeypatch.setattr(ActivationsStore, "get_activations", no_model_pass)
    res = train_gba_on_model(
        LMTrainConfig(hook=[HOOK], cache_dir=str(cache), out=str(tmp_path / "out"), **{**TINY, "width": [32, 64]}),
        model=model,
    )
    assert sorted(res.saes) == [f"{HOOK}-w32", f"{HOOK}-w64"]
    assert [res.saes[n].cfg.d_sae for n in sorted(res.saes)] == [32, 64]
    assert json.loads(res.results_path.read_text())["from_cache"] == str(cache)

    # a cache whose width does not match the hook is refused before training
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    small = HookedTransformer(HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, n_heads=4,
                                                      d_vocab=100, act_fn="gelu", normalization_type="LN", seed=0))
    with pytest.raises(ValueError, match="d_in mismatch.*width 64.*d_in 128"):
        train_gba_on_model(LMTrainConfig(hook=[HOOK], cache_dir=str(cache), out=str(tmp_path / "x"), **TINY), model=small)


def test_local_text_and_token_files_give_disjoint_train_and_eval(model, tmp_path):
    from safetensors.torch import save_file

    loaded = LoadedModel(model, "stdlib", "HookedTransformer")
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(3):
        (texts / f"f{i}.txt").write_text("".join(f"x_{i}_{j} = {j * 7919 % 1000}\n" for j in range(150)))
    src = load_tokens(str(texts), loaded, 32, train_tokens=1, eval_tokens=64)
    assert src.context_size == 32 and len(src.eval) == 2 and len(src.train) >= 30
    assert all(row[0] == 0 for row in src.train["tokens"])  # BOS-prefixed rows
    assert not {tuple(r) for r in src.eval["tokens"]} & {tuple(r) for r in src.train["tokens"]}
    rows = torch.randint(2, 4096, (20, 16))
    save_file({"tokens": rows}, str(tmp_path / "toks.safetensors"))
    src = load_tokens(str(tmp_path / "toks.safetensors"), loaded, None, train_tokens=1, eval_tokens=32)
    assert src.context_size == 16 and len(src.train) == 18 and len(src.eval) == 2
    assert src.eval["tokens"] == rows[18:].tolist()
    save_file({"tokens": rows + 5000}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        load_tokens(str(tmp_path / "bad.safetensors"), loaded, None, train_tokens=1, eval_tokens=32)


def test_stdlib_rows_are_spread_over_each_split(model):
    from gba_lens.data.stdlib_corpus import stdlib_token_dataset

    loaded = LoadedModel(model, "stdlib", "HookedTransformer")
    src = load_tokens(None, loaded, 32, train_tokens=8 * 32, eval_tokens=4 * 32)
    for rows, split in ((src.train, "train"), (src.eval, "val")):
        every = stdlib_token_dataset(model.tokenizer, 32, split)["tokens"]
        k, n = len(rows), len(every)
        assert rows["tokens"] == [every[i * n // k] for i in range(k)]  # not the first k rows (a few files)
        assert rows["tokens"][-1] != every[k - 1]


def test_cache_of_local_text_is_not_evaluated_on(model, tmp_path):
    import datasets

    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("".join(f"y_{j} = {j * 7919 % 1000} + z_{j % 13}\n" for j in range(200)))
    n_rows = len(load_tokens(str(texts), LoadedModel(model, "m", "HookedTransformer"), 32, 1, 32).train) + 1
    cache_rows = (n_rows - 3) // 8 * 8  # most of the data, in whole store batches of 8 rows
    assert cache_rows > n_rows - n_rows // 5  # so the default held-out tail overlaps the cache
    cache = cache_lm_activations(
        LMCacheConfig(dataset=str(texts), hook=HOOK, tokens=cache_rows * 32, context_size=32, store_batch_prompts=8,
                      out=str(tmp_path / "acts")),
        model=model,
    )
    res = train_gba_on_model(
        LMTrainConfig(dataset=str(texts), hook=[HOOK], cache_dir=str(cache), out=str(tmp_path / "o"),
                      **{**TINY, "training_tokens": 1024, "batch_tokens": 512, "width": [16], "n_groups": 2}),
        model=model,
    )
    cached_rows = {tuple(r) for r in datasets.load_from_disk(str(cache))["token_ids"]}
    eval_rows = [tuple(r) for r in res.token_source.eval.with_format(None)["tokens"]]
    assert len(cached_rows) == cache_rows and len(eval_rows) >= 1
    assert not cached_rows & set(eval_rows)  # held-out tokens come after the cached ones
    assert res.evals[HOOK].metrics["l0"] > 0


def test_cli_help_and_tiny_run(tmp_path, capsys):
    from gba_lens.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for text in ("--cache-dir", "--hook", "--highest-target", "Hook name(s)", "offline stdlib LM"):
        assert text in help_text
    out = tmp_path / "cli"
    rc = main(["train", "--training-tokens", "2048", "--batch-tokens", "1024", "--width", "32", "--context-size", "32",
               "--eval-tokens", "128", "--eval-batch-prompts", "4", "--store-batch-prompts", "8",
               "--buffer-batches", "2", "--n-groups", "2", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "CE loss recovered" in printed and "tokens/s" in printed
    payload = json.loads((out / "results.json").read_text())
    assert payload["saes"][HOOK]["d_sae"] == 32 and len(payload["saes"][HOOK]["group_targets"]) == 2


def test_local_directory_trains_as_bridge_and_wandb_offline_run_is_written(tmp_path, monkeypatch):
    from wandb.sdk.wandb_run import Run

    from gba_lens.models.stdlib_lm import STDLIB_LM_DIR

    # wandb's settings (and so its directory) are fixed by the first run in the process: find this
    # run's files through the run itself.
    run_dirs = []
    real_finish = Run.finish

    def spy_finish(self, *args, **kwargs):
        run_dirs.append(Path(self.dir).parent)
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(Run, "finish", spy_finish)

    # a save_pretrained directory: booted with TransformerBridge.boot_transformers
    res = train_gba_on_model(
        LMTrainConfig(model=str(STDLIB_LM_DIR), hook=[HOOK], out=str(tmp_path / "o"), wandb_project="gba-test",
                      log_every=1, **TINY)
    )
    assert type(res.model.model).__name__ == "TransformerBridge"
    assert json.loads(res.results_path.read_text())["model_class_name"] == "TransformerBridge"
    assert json.loads((tmp_path / "o" / HOOK / "cfg.json").read_text())["metadata"]["hook_name"] == HOOK
    runs = [d for d in run_dirs if d.name.startswith("offline-run-")]
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    history_file = list(runs[0].glob("run-*.wandb"))[0]
    # wandb's service process may still be flushing the run file when finish() returns
    for _ in range(60):
        history = history_file.read_bytes()  # protobuf records: keys are plain bytes
        if f"final_eval/{HOOK}/ce_loss_score".encode() in history:
            break
        time.sleep(0.5)
    assert b"losses/overall_loss" in history and b"metrics/gba/l0" in history  # training steps
    assert f"final_eval/{HOOK}/ce_loss_score".encode() in history  # the held-out evaluation
    assert res.evals[HOOK].metrics["l0"] > 0


def test_training_survives_failing_wandb_log(model, tmp_path, monkeypatch):
    from wandb.sdk.wandb_run import Run

    calls = []

    def broken_log(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("W&B is down")

    # wandb.init rebinds the module-level wandb.log to the run's method: break the method itself
    monkeypatch.setattr(Run, "log", broken_log)
    with pytest.warns(UserWarning, match="W&B logging failed"):
        res = train_gba_on_model(
            LMTrainConfig(hook=[HOOK], out=str(tmp_path / "o"), wandb_project="gba-test", log_every=1, **TINY),
            model=model,
        )
    assert len(calls) == 2  # the first training log (then logging is switched off) and the final one
    assert res.results_path.exists() and (tmp_path / "o" / HOOK / "cfg.json").exists()
    assert json.loads(res.results_path.read_text())["training_tokens"] == 4096


def test_checkpoints_are_safetensors_and_resume(model, tmp_path):
    out = tmp_path / "ck"
    first = train_gba_on_model(LMTrainConfig(hook=[HOOK], out=str(out), checkpoint_every=2, **TINY), model=model)
    steps = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert steps == ["step_000000002", "step_000000004"]
    ck = out / "checkpoints" / steps[-1]
    assert (ck / "trainer_state.safetensors").exists() and (ck / "trainer_state.json").exists()
    assert not list(ck.glob("*.pt"))
    # another seed: a fresh start would initialise the encoder differently, a resumed run does not
    # (other settings than the recorded ones: resume_anyway says to continue anyway); the encoder, since
    # the decoder is refitted at the end of each run (decoder_refit, a default)
    second = train_gba_on_model(
        LMTrainConfig(hook=[HOOK], out=str(out), resume=True, resume_anyway=True,
                      **{**TINY, "training_tokens": 6144, "seed": 7}),
        model=model,
    )
    assert json.loads(second.results_path.read_text())["resumed_from"] == str(ck)
    w_first = first.training_saes[HOOK].W_enc.detach()
    w_second = second.training_saes[HOOK].W_enc.detach()
    assert not torch.equal(w_first, w_second)  # it did train two more steps ...
    assert (w_second - w_first).abs().max() < 0.03  # ... starting from the checkpoint
    assert second.training_saes[HOOK].input_scale == first.training_saes[HOOK].input_scale


@pytest.mark.parametrize("hooks", [[HOOK], [HOOK, "blocks.0.hook_resid_post"]], ids=["one-hook", "multi-hook"])
def test_runner_trains_through_the_sparse_step(model, tmp_path, monkeypatch, hooks):
    """``gba-lens train`` with the sparse step (SAELens's single- and multi-SAE trainers read its
    sparse feature activations); the saved SAE is a plain SAELens SAE as with the dense step."""
    from gba_lens.saes import sparse_step

    steps: list[int] = []
    real = sparse_step.sparse_gated_autoencode
    monkeypatch.setattr(sparse_step, "sparse_gated_autoencode",
                        lambda *a, **k: steps.append(1) or real(*a, **k))
    res = train_gba_on_model(
        LMTrainConfig(hook=hooks, out=str(tmp_path), sparse_step="on", **{**TINY, "width": [256]}), model=model
    )
    assert len(steps) == 4 * len(hooks)  # 4096 tokens / 1024 per step, every step of every SAE
    for hook in hooks:
        sae = SAE.load_from_disk(str(tmp_path / hook))
        assert sae.cfg.d_sae == 256 and sae.cfg.architecture() == "jumprelu"
        assert res.evals[hook].metrics["l0"] > 0


@pytest.mark.parametrize("hooks", [[HOOK], [HOOK, "blocks.0.hook_resid_post"]], ids=["one-hook", "multi-hook"])
def test_runner_says_per_hook_when_an_sae_ended_with_its_l0_still_falling(model, tmp_path, monkeypatch, hooks):
    """Both of SAELens's runners (one SAE, several) pass each SAE's end-of-run L0 check on, named
    by its hook (the check itself: tests/training/test_l0_course.py)."""
    import warnings

    from gba_lens.training.l0_course import L0Course

    monkeypatch.setattr(L0Course, "still_falling", lambda self: f"steps counted {self.steps}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = train_gba_on_model(LMTrainConfig(hook=hooks, out=str(tmp_path), find_l0=False,  # the paper's rule
                                               **{**TINY, "training_tokens": 10240, "width": [32]}), model=model)
    said = [str(w.message) for w in caught if "steps counted" in str(w.message)]
    # 10 steps: the ninth in the second-to-last tenth of the run, the tenth in the last
    assert sorted(said) == sorted(f"{hook}: steps counted [1, 1]" for hook in hooks)
    # ... and results.json keeps each SAE's warning
    kept = json.loads(res.results_path.read_text())["l0_unsettled"]
    assert kept == {name: "steps counted [1, 1]" for name in res.saes}
