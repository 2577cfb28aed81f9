"""IOI prompt sets (gba_lens.tasks.ioi): tokenization, BOS, balance, positions, corruption, splits."""

from __future__ import annotations

import pytest
import torch

import gba_lens.circuits.ioi as circuits_ioi
import gba_lens.tasks.ioi as tasks_ioi
from gba_lens.tasks.ioi import (
    IOI_NAMES,
    IOI_TEMPLATES,
    IOIPromptSet,
    babatemplate,
    make_ioi_prompts,
    single_token_names,
)


def test_circuits_ioi_reexports_the_task():
    for name in tasks_ioi.__all__:
        assert getattr(circuits_ioi, name) is getattr(tasks_ioi, name)


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
