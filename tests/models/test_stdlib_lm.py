"""The committed stdlib LM loads offline as HookedTransformer and TransformerBridge, agrees with
the Hugging Face model, and predicts held-out stdlib code far better than a unigram model."""

from __future__ import annotations

import json

import pytest
import torch

from gba_lens.models import stdlib_lm as S


def test_assets_are_small_and_complete():
    files = {p.name: p.stat().st_size for p in S.STDLIB_LM_DIR.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "training_info.json"):
        assert name in files, f"missing {name}"
    assert sum(files.values()) < 4_000_000
    cfg = json.loads((S.STDLIB_LM_DIR / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    info = S.load_training_info()
    assert info["val_loss_nats"] < info["unigram_baseline_nats"] - 1.0


def test_tokenizer_round_trips_and_has_special_tokens(tokenizer):
    text = "class A:\n    def f(self, x):\n\treturn {'k': x ** 2}  # é ✓\n\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode()) / 1.5  # BPE merges, not bytes
    assert len(tokenizer) == 4096
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == 0
    assert tokenizer.pad_token_id == 1


def test_kinds_have_expected_types(models):
    from transformer_lens import HookedTransformer
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2LMHeadModel

    assert isinstance(models["hooked"], HookedTransformer)
    assert isinstance(models["bridge"], TransformerBridge)
    assert isinstance(models["hf"], GPT2LMHeadModel)
    assert models["hooked"].cfg.d_model == 128 and models["hooked"].cfg.n_layers == 2
    with pytest.raises(ValueError, match="kind"):
        S.load_stdlib_lm("gpt")  # type: ignore[arg-type]


def test_logits_agree_across_kinds(models, val_rows):
    toks = val_rows[:4]
    with torch.no_grad():
        hf = models["hf"](toks).logits
        hooked = models["hooked"](toks)
        bridge = models["bridge"](toks)
    assert hf.dtype == hooked.dtype == bridge.dtype == torch.float32
    assert torch.allclose(hooked, hf, atol=1e-4, rtol=1e-4), (hooked - hf).abs().max()
    assert torch.allclose(bridge, hf, atol=1e-4, rtol=1e-4), (bridge - hf).abs().max()


def test_to_tokens_prepends_bos_once(models, tokenizer):
    for kind in ("hooked", "bridge"):
        toks = models[kind].to_tokens("import os")
        assert toks[0, 0].item() == tokenizer.bos_token_id
        assert toks[0, 1].item() != tokenizer.bos_token_id
        assert models[kind].to_string(toks[0, 1:]) == "import os"


def test_validation_loss_far_below_unigram(models, val_rows):
    info = S.load_training_info()
    loss = models["hooked"](val_rows, return_type="loss").item()
    # Committed model: 4.12 nats on these rows (3.45 on the whole val split) vs a 6.46-nat
    # unigram baseline; an untrained model scores ~8.3.
    assert loss < 4.6
    assert loss < info["unigram_baseline_nats"] - 1.5
    assert abs(models["bridge"](val_rows, return_type="loss").item() - loss) < 1e-4


def test_completes_main_guard(models):
    model = models["hooked"]
    toks = model.to_tokens("if __name__ ==")
    with torch.no_grad():
        for _ in range(3):
            nxt = model(toks)[0, -1].argmax()
            toks = torch.cat([toks, nxt.view(1, 1)], dim=1)
    assert model.to_string(toks[0, 1:]) == "if __name__ == '__main__"


def test_greedy_generate_agrees_across_kinds(models):
    toks = models["hooked"].to_tokens("    def __init__(self")
    hf = models["hf"].generate(toks, max_new_tokens=8, do_sample=False)
    kwargs = dict(max_new_tokens=8, do_sample=False, verbose=False, return_type="tokens")
    assert torch.equal(models["hooked"].generate(toks, **kwargs), hf)
    assert torch.equal(models["bridge"].generate(toks, **kwargs), hf)


@pytest.mark.parametrize("kind", ["hooked", "bridge"])
def test_hooks_fire_in_run_with_cache(models, val_rows, kind):
    model = models[kind]
    names = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre",
             "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z", "blocks.1.hook_resid_post"]
    _, cache = model.run_with_cache(val_rows[:2], names_filter=lambda n: n in names)
    for name in ["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]:
        assert cache[name].shape == (2, 128, 128)
        assert torch.isfinite(cache[name]).all()
    assert cache["blocks.1.attn.hook_z"].shape == (2, 128, 4, 32)


def test_activations_agree_between_hooked_and_bridge(models, val_rows):
    name = "blocks.1.hook_resid_pre"
    _, c_hooked = models["hooked"].run_with_cache(val_rows[:2], names_filter=name)
    _, c_bridge = models["bridge"].run_with_cache(val_rows[:2], names_filter=name)
    assert torch.allclose(c_hooked[name], c_bridge[name], atol=1e-5)


def test_missing_assets_error_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_stdlib_lm.py"):
        S.load_stdlib_lm("hooked", path=tmp_path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # SAELens: "fewer samples than required"
def test_dataset_trains_a_saelens_sae(models, tokenizer, tmp_path, monkeypatch):
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        StandardTrainingSAEConfig,
    )

    monkeypatch.chdir(tmp_path)
    ds = S.stdlib_token_dataset(tokenizer, split="train", max_tokens=32 * 128)
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=128, d_sae=256),
        model_name=S.STDLIB_LM_NAME,
        hook_name="blocks.1.hook_resid_pre",
        context_size=128,
        training_tokens=2048,
        train_batch_size_tokens=1024,
        n_batches_in_buffer=8,
        store_batch_size_prompts=8,
        n_batches_for_norm_estimate=2,
        logger=LoggingConfig(log_to_wandb=False),
        output_path=None,
        checkpoint_path=None,
        device="cpu",
    )
    runner = LanguageModelSAETrainingRunner(cfg, override_model=models["hooked"], override_dataset=ds)
    sae = runner.run()
    toks = torch.as_tensor(ds[:2]["tokens"])
    _, cache = models["hooked"].run_with_cache(toks, names_filter="blocks.1.hook_resid_pre")
    feats = sae.encode(cache["blocks.1.hook_resid_pre"])
    assert feats.shape == (2, 128, 256) and torch.isfinite(feats).all()
