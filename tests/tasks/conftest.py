"""Fixtures of the task tests: the committed IOI model and a GPT-2 style BPE tokenizer trained here."""

from __future__ import annotations

import itertools

import pytest

from gba_lens.models.ioi_model import load_ioi_model
from gba_lens.tasks.ioi import IOI_TEMPLATES


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
