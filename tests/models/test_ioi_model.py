"""The committed offline IOI model (gba_lens.models.ioi_model): files, split, IOI performance."""

from __future__ import annotations

import json

import pytest
import torch

from gba_lens.circuits.ioi import logit_diff, logit_diff_accuracy, mean_logit_diff
from gba_lens.models.ioi_model import (
    IOI_MODEL_DIR,
    ioi_heldout_prompts,
    load_ioi_model,
    load_ioi_split,
    load_ioi_tokenizer,
    load_ioi_training_info,
)


@pytest.fixture(scope="module")
def ioi_model():
    return load_ioi_model("cpu")


def test_committed_model_files_are_not_pickles():
    names = {p.name for p in IOI_MODEL_DIR.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "split.json",
        "training_info.json",
    } <= names
    assert not any(n.endswith((".pt", ".pth", ".bin", ".pkl")) for n in names)
    total = sum(p.stat().st_size for p in IOI_MODEL_DIR.iterdir())
    assert total < 400_000
    cfg = json.loads((IOI_MODEL_DIR / "config.json").read_text())
    assert (
        cfg["attn_only"] and cfg["n_layers"] == 2 and cfg["d_model"] == 64 and cfg["n_heads"] == 4
    )
    assert cfg["d_vocab"] == len(load_ioi_tokenizer())


def test_split_is_disjoint():
    sp = load_ioi_split()
    assert len(sp.heldout_templates) == 2 and len(sp.train_templates) == 13
    assert not set(sp.heldout_templates) & set(sp.train_templates)
    n_pairs = len(sp.names) * (len(sp.names) - 1) // 2
    assert len(sp.heldout_pairs) == round(0.1 * n_pairs)
    # Every name still appears in some training pair.
    held = {frozenset(p) for p in sp.heldout_pairs}
    for name in sp.names:
        assert any(frozenset((name, o)) not in held for o in sp.names if o != name)


@pytest.mark.parametrize("split", ["pairs", "templates", "both"])
def test_committed_model_performs_ioi_on_heldout(ioi_model, split):
    sp = load_ioi_split()
    ps = ioi_heldout_prompts(ioi_model, split, n_prompts=300, seed=7)
    held = {frozenset(p) for p in sp.heldout_pairs}
    pair_held = [frozenset((a, b)) in held for a, b in zip(ps.io_names, ps.s_names, strict=True)]
    assert all(pair_held) if split in ("pairs", "both") else not any(pair_held)
    used = {ps.templates[i] for i in ps.template_indices}
    assert used <= set(sp.heldout_templates if split != "pairs" else sp.train_templates)
    with torch.no_grad():
        clean = ioi_model(ps.clean_tokens)
        abc = ioi_model(ps.corrupted_tokens)
    ld = logit_diff(clean, ps)
    assert float(ld.mean()) > 3.0
    assert logit_diff_accuracy(clean, ps) > 0.9
    # ABC corruption removes the signal (the duplicated subject is gone).
    assert abs(float(mean_logit_diff(abc, ps))) < 0.3 * float(ld.mean())


def test_flip_corruption_reverses_the_answer(ioi_model):
    ps = ioi_heldout_prompts(ioi_model, "pairs", n_prompts=100, corruption="flip", seed=3)
    with torch.no_grad():
        ld_clean = mean_logit_diff(ioi_model(ps.clean_tokens), ps)
        ld_flip = mean_logit_diff(ioi_model(ps.corrupted_tokens), ps)
    assert float(ld_clean) > 3.0 and float(ld_flip) < -3.0


def test_training_info_matches_reloaded_model(ioi_model):
    info = load_ioi_training_info()
    for split in ("pairs", "templates"):
        rec = info["eval"][split]
        assert rec["logit_diff_mean"] > 3.0 and rec["accuracy"] > 0.9
        ps = ioi_heldout_prompts(ioi_model, split, rec["n_prompts"], seed=1234)
        with torch.no_grad():
            measured = float(mean_logit_diff(ioi_model(ps.clean_tokens), ps))
        assert measured == pytest.approx(rec["logit_diff_mean"], abs=1e-3)
