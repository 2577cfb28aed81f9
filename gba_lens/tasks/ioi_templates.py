"""IOI word lists and templates, and the one-token filtering of words for a tokenizer.

Used by :mod:`gba_lens.tasks.ioi` to build prompt sets; see there for the task.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

__all__ = [
    "IOI_NAMES",
    "IOI_OBJECTS",
    "IOI_PLACES",
    "IOI_TEMPLATES",
    "Corruption",
    "babatemplate",
    "single_token_names",
]

#: Templates in ABBA form: ``{A}`` is the indirect object (the answer), ``{B}`` the subject, which
#: appears twice (S1 and S2). The BABA form swaps the first ``{A}`` and the first ``{B}``
#: (see :func:`babatemplate`). Every template ends right before the answer and no name starts the
#: text, so with GPT-2 style tokenizers every name is the space-prefixed token (``" Mary"``).
IOI_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {PLACE}, {B} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {B} decided to give it to",
    "After {A} and {B} went to the {PLACE}, {B} handed a {OBJECT} to",
    "Then, {A} and {B} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {A} and {B} had a long argument, and afterwards {B} said to",
    "While {A} and {B} were working at the {PLACE}, {B} gave a {OBJECT} to",
    "After {A} and {B} got a {OBJECT} at the {PLACE}, {B} gave it to",
    "When {A} and {B} arrived at the {PLACE}, {B} handed a {OBJECT} to",
    "Then, {A} and {B} were thinking about going to the {PLACE}. {B} wanted to give a {OBJECT} to",
    "While {A} and {B} were at the {PLACE}, {B} decided to give a {OBJECT} to",
    "Afterwards, {A} and {B} went to the {PLACE}. {B} brought a {OBJECT} to",
    "When {A} and {B} left the {PLACE}, {B} threw a {OBJECT} to",
    "After {A} and {B} left the {PLACE}, {B} brought the {OBJECT} to",
    "Once {A} and {B} arrived at the {PLACE}, {B} threw the {OBJECT} to",
    "Once {A} and {B} had a long argument at the {PLACE}, {B} said to",
)

#: 100 common English first names, mostly from the IOI paper's list of names that are one GPT-2
#: token with a leading space (not re-checked here: there is no GPT-2 tokenizer offline).
#: :func:`make_ioi_prompts` always keeps only the names that are one token for the tokenizer used.
IOI_NAMES: tuple[str, ...] = tuple(
    """
    Michael Christopher Jessica Matthew Ashley Jennifer Joshua Amanda Daniel David James
    Robert John Joseph Andrew Ryan Brandon Jason Justin Sarah William Jonathan Stephanie
    Brian Nicole Nicholas Anthony Heather Eric Elizabeth Adam Megan Melissa Kevin Steven
    Thomas Timothy Christina Kyle Rachel Laura Lauren Amber Brittany Danielle Richard
    Kimberly Jeffrey Amy Crystal Michelle Tiffany Jeremy Benjamin Mark Emily Aaron
    Charles Rebecca Jacob Stephen Patrick Sean Erin Jamie Kelly Samantha Nathan Sara
    Dustin Paul Angela Tyler Scott Katherine Andrea Gregory Erica Mary Travis Lisa
    Kenneth Bryan Lindsey Kristen Jose Alexander Jesse Katie Lindsay Shannon Vanessa
    Courtney Christine Alicia Cody Allison Bradley Samuel George
    """.split()
)

#: Places and objects (common words; filtered to one token per tokenizer like the names).
IOI_PLACES: tuple[str, ...] = tuple(
    """
    store park school restaurant hospital office beach station garden library market
    house
    """.split()
)
IOI_OBJECTS: tuple[str, ...] = tuple(
    """
    ball book drink ring bone gift key letter basket snack computer necklace
    """.split()
)

Corruption = Literal["abc", "flip"]
_CORRUPTIONS = ("abc", "flip")


# ----------------------------------------------------------------------------------- tokenizers
def _get_tokenizer(model_or_tokenizer: Any) -> Any:
    """Return the HF tokenizer of a TransformerLens model, or the object itself if a tokenizer."""
    from transformers import PreTrainedTokenizerBase

    if isinstance(model_or_tokenizer, PreTrainedTokenizerBase):
        return model_or_tokenizer
    tokenizer = getattr(model_or_tokenizer, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            f"{type(model_or_tokenizer).__name__} has no tokenizer: pass a Hugging Face tokenizer "
            "or a model built with one (e.g. HookedTransformer(cfg, tokenizer=...))."
        )
    return tokenizer


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without any special tokens (BOS is handled by the caller)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids)


def single_token_names(
    tokenizer: Any, names: Sequence[str] = IOI_NAMES, prefix: str = " "
) -> list[str]:
    """Keep the names that are exactly one (known) token when written as ``prefix + name``.

    Args:
        tokenizer: a Hugging Face tokenizer, or a model with a ``.tokenizer``.
        names: candidate names (or any words: places, objects).
        prefix: text put before the name when tokenizing; GPT-2 style byte-level BPE tokenizers
            encode a name in mid-sentence as ``" Mary"`` (leading space), which is the default.
            Use ``""`` for tokenizers without that convention.

    Returns:
        The names, in input order and without duplicates, that map to one token that is not the
        unknown token (word-level tokenizers map every unknown word to one ``<unk>`` token).
    """
    tokenizer = _get_tokenizer(tokenizer)
    unk_id = getattr(tokenizer, "unk_token_id", None)
    kept: list[str] = []
    for name in dict.fromkeys(names):
        ids = _encode(tokenizer, prefix + name)
        if len(ids) == 1 and (unk_id is None or ids[0] != unk_id):
            kept.append(name)
    return kept


def _single_token_id(tokenizer: Any, word: str, prefix: str) -> int:
    ids = _encode(tokenizer, prefix + word)
    if len(ids) != 1:
        raise ValueError(f"{prefix + word!r} is {len(ids)} tokens, expected one")
    return ids[0]


# ------------------------------------------------------------------------------------ templates
def babatemplate(template: str) -> str:
    """The BABA form of an ABBA template: swap the first ``{A}`` and the first ``{B}``."""
    _check_template(template)
    i_a, i_b = template.index("{A}"), template.index("{B}")  # i_a < i_b in ABBA form
    return template[:i_a] + "{B}" + template[i_a + 3 : i_b] + "{A}" + template[i_b + 3 :]


def _check_template(template: str) -> None:
    """Raise unless ``template`` is in ABBA form: slots ``{A}``, ``{B}``, ``{B}`` in text order."""
    if _slot_order(template) != ["A", "B", "B"]:
        raise ValueError(
            "an IOI template must be in ABBA form: one {A} (indirect object, the answer) "
            f"followed by two {{B}} (subject), e.g. {IOI_TEMPLATES[0]!r}; got {template!r}"
        )


def _slot_order(template: str) -> list[str]:
    """Placeholders ``A``/``B`` in text order, e.g. ``['A', 'B', 'B']`` for ABBA."""
    slots = []
    i = 0
    while True:
        j_a, j_b = template.find("{A}", i), template.find("{B}", i)
        cands = [j for j in (j_a, j_b) if j >= 0]
        if not cands:
            return slots
        j = min(cands)
        slots.append("A" if j == j_a else "B")
        i = j + 3


def _fill(template: str, a: str, b: str, place: str, obj: str, s2: Optional[str] = None) -> str:
    """Fill a template; ``s2`` (default ``b``) replaces the last ``{B}`` only."""
    s2 = b if s2 is None else s2
    j = template.rindex("{B}")
    template = template[:j] + s2 + template[j + 3 :]
    return (
        template.replace("{A}", a)
        .replace("{B}", b)
        .replace("{PLACE}", place)
        .replace("{OBJECT}", obj)
    )
