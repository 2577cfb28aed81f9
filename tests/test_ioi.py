"""IOI prompt sets, metrics and the committed offline IOI model (no downloads)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from gba_lens.circuits.ioi import (
    IOI_NAMES,
    IOI_TEMPLATES,
    IOIPromptSet,
    babatemplate,
    logit_diff,
    logit_diff_accuracy,
    make_ioi_prompts,
    mean_logit_diff,
    normalized_logit_diff,
    single_token_names,
)
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


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A GPT-2 style byte-level BPE tokenizer trained here: BOS = EOS, no pad, leading spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    frequent = ["Mary", "John", "Sarah", "James", "Emily", "David"]
    corpus = [
        t.replace("{A}", a)
        .replace("{B}", b)
        .replace("{PLACE}", "store")
        .replace("{OBJECT}", "ball")
        for t in IOI_TEMPLATES
        for a, b in itertools.permutations(frequent, 2)
    ]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


# ------------------------------------------------------------------------------ single tokens


def test_single_token_names_word_level(ioi_model):
    tok = ioi_model.tokenizer
    kept = single_token_names(tok, ["Mary", "Zebediah", "John", "Mary Ann", "Mary"])
    # Unknown words map to one <unk> token: they must be dropped, as must two-word names.
    assert kept == ["Mary", "John"]
    assert single_token_names(tok, IOI_NAMES) == list(IOI_NAMES)


def test_single_token_names_bpe_prefix(bpe_tokenizer):
    kept = single_token_names(bpe_tokenizer, ["Mary", "John", "Bartholomew", "Zebediah"])
    assert kept == ["Mary", "John"]
    # GPT-2 convention: " Mary" (mid-sentence) is one token, "Mary" without a space is not.
    assert len(bpe_tokenizer(" Mary", add_special_tokens=False)["input_ids"]) == 1
    assert single_token_names(bpe_tokenizer, ["Mary", "John"], prefix="") == []


# ------------------------------------------------------------------------------ prompt sets


def _real(ps: IOIPromptSet, i: int) -> list[int]:
    return ps.clean_tokens[i, : int(ps.lengths[i])].tolist()


def test_exactly_one_bos_and_matches_to_tokens(ioi_model):
    tok = ioi_model.tokenizer
    assert ioi_model.cfg.tokenizer_prepends_bos  # TL's reloaded tokenizer adds BOS by itself
    ps = make_ioi_prompts(ioi_model, 40, seed=3)
    assert ps.prepend_bos
    bos = tok.bos_token_id
    for i in range(len(ps)):
        ids = _real(ps, i)
        assert ids[0] == bos and ids.count(bos) == 1
        assert ps.corrupted_tokens[i, : int(ps.lengths[i])].tolist().count(bos) == 1
        # Same tokens as TransformerLens's own tokenization of the prompt.
        assert ids == ioi_model.to_tokens(ps.clean_prompts[i])[0].tolist()
        # Right padding after the last real token.
        assert (ps.clean_tokens[i, int(ps.lengths[i]) :] == ps.pad_token_id).all()
    no_bos = make_ioi_prompts(ioi_model, 10, seed=3, prepend_bos=False)
    assert not no_bos.prepend_bos and not (no_bos.clean_tokens == bos).any()
    for i in range(10):
        assert _real(no_bos, i) == _real(ps, i)[1:]
        assert int(no_bos.s2_pos[i]) == int(ps.s2_pos[i]) - 1


def test_bpe_tokenizer_one_bos_even_when_bos_is_pad(bpe_tokenizer):
    ps = make_ioi_prompts(
        bpe_tokenizer, 30, names=["Mary", "John", "Sarah", "James", "Bartholomew"]
    )
    bos = bpe_tokenizer.bos_token_id
    assert ps.prepend_bos and ps.pad_token_id == bos  # GPT-2 style: pad falls back to EOS = BOS
    assert set(ps.io_names) | set(ps.s_names) <= {"Mary", "John", "Sarah", "James"}
    for i in range(len(ps)):
        assert _real(ps, i)[0] == bos and _real(ps, i).count(bos) == 1
    answers = ps.answer_tokens[:, 0].tolist()
    assert answers == [
        bpe_tokenizer(" " + n, add_special_tokens=False)["input_ids"][0] for n in ps.io_names
    ]


def test_abba_baba_balance_and_positions(ioi_model):
    ps = make_ioi_prompts(ioi_model, 100, seed=1)
    assert ps.orders.count("ABBA") == 50 and ps.orders.count("BABA") == 50
    tok = ioi_model.tokenizer
    for i in range(len(ps)):
        io, s1, s2, end = (
            int(ps.io_pos[i]),
            int(ps.s1_pos[i]),
            int(ps.s2_pos[i]),
            int(ps.end_pos[i]),
        )
        if ps.orders[i] == "ABBA":
            assert io < s1 < s2 < end
        else:
            assert s1 < io < s2 < end
        ids = _real(ps, i)
        assert ids[io] == ps.answer_tokens[i, 0] == tok.convert_tokens_to_ids(ps.io_names[i])
        assert (
            ids[s1] == ids[s2] == ps.answer_tokens[i, 1] == tok.convert_tokens_to_ids(ps.s_names[i])
        )
        assert end == len(ids) - 1 and tok.convert_ids_to_tokens(ids[end]) == "to"
        assert ps.io_names[i] != ps.s_names[i]
    # Same template and order -> same length (one-token names, places and objects).
    by_template: dict[tuple[int, str], set[int]] = {}
    for i in range(len(ps)):
        by_template.setdefault((ps.template_indices[i], ps.orders[i]), set()).add(
            int(ps.lengths[i])
        )
    assert all(len(v) == 1 for v in by_template.values())
    single = make_ioi_prompts(ioi_model, 12, templates=[IOI_TEMPLATES[0]], seed=0)
    assert single.same_length


def test_babatemplate():
    assert (
        babatemplate(IOI_TEMPLATES[0])
        == "When {B} and {A} went to the {PLACE}, {B} gave a {OBJECT} to"
    )
    with pytest.raises(ValueError, match="ABBA form"):
        babatemplate("When {B} and {A} went, {B} gave it to")


@pytest.mark.parametrize("corruption", ["abc", "flip"])
def test_corrupted_prompts_differ_only_at_name_positions(ioi_model, corruption):
    ps = make_ioi_prompts(ioi_model, 60, corruption=corruption, seed=2)
    assert ps.clean_tokens.shape == ps.corrupted_tokens.shape
    n = len(ps)
    diff = ps.clean_tokens != ps.corrupted_tokens
    expected = torch.zeros_like(diff)
    rows = torch.arange(n)
    expected[rows, ps.s2_pos] = True
    if corruption == "flip":
        expected[rows, ps.io_pos] = True
        expected[rows, ps.s1_pos] = True
    assert torch.equal(diff, expected)
    tok = ioi_model.tokenizer
    for i in range(n):
        s2_name = tok.convert_ids_to_tokens(int(ps.corrupted_tokens[i, ps.s2_pos[i]]))
        assert s2_name == ps.c_names[i]
        if corruption == "abc":
            assert ps.c_names[i] not in (ps.io_names[i], ps.s_names[i])
            assert ps.corrupted_prompts[i].count(ps.c_names[i]) == 1
        else:  # IO and S swapped everywhere
            assert ps.c_names[i] == ps.io_names[i]
            assert int(ps.corrupted_tokens[i, ps.io_pos[i]]) == int(ps.answer_tokens[i, 1])
            assert int(ps.corrupted_tokens[i, ps.s1_pos[i]]) == int(ps.answer_tokens[i, 0])
    assert ps.corrupted_positions == (["S2"] if corruption == "abc" else ["IO", "S1", "S2"])


def test_pairs_exclusion_subset_and_determinism(ioi_model):
    pairs = [("Mary", "John"), ("Sarah", "James")]
    ps = make_ioi_prompts(ioi_model, 20, pairs=pairs, seed=5)
    allowed = {frozenset(p) for p in pairs}
    assert all(frozenset((a, b)) in allowed for a, b in zip(ps.io_names, ps.s_names, strict=True))
    # Unordered pairs: both names of a pair serve as the answer.
    assert {("Mary", "John"), ("John", "Mary")} <= set(zip(ps.io_names, ps.s_names, strict=True))
    names = ["Mary", "John", "Sarah"]
    excl = make_ioi_prompts(ioi_model, 20, names=names, exclude_pairs=[("Mary", "John")], seed=0)
    assert all({a, b} != {"Mary", "John"} for a, b in zip(excl.io_names, excl.s_names, strict=True))
    again = make_ioi_prompts(ioi_model, 20, pairs=pairs, seed=5)
    assert again.clean_prompts == ps.clean_prompts
    assert make_ioi_prompts(ioi_model, 20, pairs=pairs, seed=6).clean_prompts != ps.clean_prompts
    sub = ps.subset([3, 1])
    assert sub.clean_prompts == [ps.clean_prompts[3], ps.clean_prompts[1]]
    assert torch.equal(sub.clean_tokens, ps.clean_tokens[[3, 1]])
    assert torch.equal(sub.end_pos, ps.end_pos[[3, 1]]) and len(ps.subset(slice(0, 5))) == 5


def test_bad_inputs(ioi_model):
    with pytest.raises(ValueError, match="at least 3"):
        make_ioi_prompts(ioi_model, 4, names=["Mary", "John", "Zebediah"])
    with pytest.raises(ValueError, match="unknown corruption"):
        make_ioi_prompts(ioi_model, 4, corruption="swap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ABBA form"):
        make_ioi_prompts(ioi_model, 4, templates=["When {A} and {B} went to"])
    with pytest.raises(ValueError, match="no tokenizer"):
        make_ioi_prompts(object(), 4)


# ---------------------------------------------------------------------------------- metrics


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


# ------------------------------------------------------------------------ the committed model


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
