"""Indirect object identification (IOI) prompt sets, for any tokenizer (task code: torch only).

IOI (Wang et al. 2022, arXiv:2211.00593) prompts look like
``"When Mary and John went to the store, John gave a drink to"``; the model should continue with
the indirect object (IO, `` Mary``) rather than the repeated subject (S, `` John``). The standard
metric is the *logit difference* ``logit(IO) - logit(S)`` at the final position
(:func:`gba_lens.circuits.ioi.logit_diff`).

:func:`make_ioi_prompts` builds:

* clean prompts from templates in both name orders (ABBA: ``A .. B .. B .. -> A``; BABA:
  ``B .. A .. B .. -> A``), balanced half/half;
* corrupted prompts of exactly the same token length: ``"abc"`` (default) replaces the second
  subject occurrence S2 by a third name C, ``"flip"`` swaps the IO and S names everywhere (so the
  answer flips);
* token tensors with exactly one BOS when the model expects one, answer token ids, and the
  positions of the names and of the final token.

Splits: ``pairs`` / ``exclude_pairs`` and ``templates`` select held-out or training name pairs
and templates (the committed IOI model's split is :func:`gba_lens.models.ioi_model.load_ioi_split`).

Why not ``transformer_lens.evals.IOIDataset``: it returns unpadded per-sample tensors without name
positions or corrupted prompts, its default name list is only John/Mary, and with a tokenizer that
already prepends BOS its ``prepend_bos=True`` doubles the BOS.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Int

from gba_lens.tasks.ioi_templates import (
    _CORRUPTIONS,
    IOI_NAMES,
    IOI_OBJECTS,
    IOI_PLACES,
    IOI_TEMPLATES,
    Corruption,
    _check_template,
    _encode,
    _fill,
    _get_tokenizer,
    _single_token_id,
    _slot_order,
    babatemplate,
    single_token_names,
)

__all__ = [
    "IOI_TEMPLATES",
    "IOI_NAMES",
    "IOI_PLACES",
    "IOI_OBJECTS",
    "Corruption",
    "IOIPromptSet",
    "single_token_names",
    "make_ioi_prompts",
    "babatemplate",
]


@dataclass
class IOIPromptSet:
    """A batch of IOI prompts, their corrupted counterparts, answers and positions.

    Token tensors are right-padded with ``pad_token_id``; each clean prompt and its corrupted
    prompt have the same length, and prompts from the same template (with one-token places and
    objects) all have the same length. Positions index into the token tensors (BOS included).

    Attributes:
        clean_prompts / corrupted_prompts: the texts (without BOS).
        clean_tokens / corrupted_tokens: ``[batch, pos]`` token ids.
        lengths: number of real (non-pad) tokens per prompt.
        answer_tokens: ``[batch, 2]``: column 0 the correct answer (IO), column 1 the wrong one
            (S), both as ``prefix + name`` tokens.
        end_pos: position of the final prompt token, whose logits predict the answer.
        io_pos, s1_pos, s2_pos: positions of the IO name, the first and the second subject name.
        io_names, s_names: the IO and S names of the clean prompts.
        c_names: the name at S2 in the corrupted prompt (the third name C for ``"abc"``, the IO
            name for ``"flip"``).
        orders: ``"ABBA"`` or ``"BABA"`` per prompt.
        template_indices: index into ``templates`` per prompt (ABBA form).
        corruption: ``"abc"`` (S2 replaced by a third name C) or ``"flip"`` (IO and S swapped
            everywhere; corrupted positions = IO, S1, S2).
        prepend_bos: whether position 0 holds the BOS token.
    """

    clean_prompts: list[str]
    corrupted_prompts: list[str]
    clean_tokens: Int[torch.Tensor, "batch pos"]
    corrupted_tokens: Int[torch.Tensor, "batch pos"]
    lengths: Int[torch.Tensor, " batch"]
    answer_tokens: Int[torch.Tensor, "batch 2"]
    end_pos: Int[torch.Tensor, " batch"]
    io_pos: Int[torch.Tensor, " batch"]
    s1_pos: Int[torch.Tensor, " batch"]
    s2_pos: Int[torch.Tensor, " batch"]
    io_names: list[str]
    s_names: list[str]
    c_names: list[str]
    orders: list[str]
    template_indices: list[int]
    templates: list[str]
    corruption: str
    prepend_bos: bool
    pad_token_id: int
    bos_token_id: Optional[int]
    name_prefix: str = " "
    metadata: dict = field(default_factory=dict)
    """Build settings (seed, number of rejected samples); free for callers to extend."""

    def __len__(self) -> int:
        return len(self.clean_prompts)

    @property
    def correct_tokens(self) -> Int[torch.Tensor, " batch"]:
        """Token id of the correct answer (the indirect object)."""
        return self.answer_tokens[:, 0]

    @property
    def wrong_tokens(self) -> Int[torch.Tensor, " batch"]:
        """Token id of the wrong answer (the subject)."""
        return self.answer_tokens[:, 1]

    @property
    def attention_mask(self) -> Int[torch.Tensor, "batch pos"]:
        """1 on real tokens, 0 on right padding."""
        pos = torch.arange(self.clean_tokens.shape[1], device=self.lengths.device)
        return (pos[None, :] < self.lengths[:, None]).long()

    @property
    def same_length(self) -> bool:
        """True when no prompt is padded (all prompts have the same token length)."""
        return bool((self.lengths == self.lengths[0]).all())

    @property
    def positions(self) -> dict[str, Int[torch.Tensor, " batch"]]:
        """Named positions: ``IO``, ``S1``, ``S2``, ``end``."""
        return {"IO": self.io_pos, "S1": self.s1_pos, "S2": self.s2_pos, "end": self.end_pos}

    @property
    def corrupted_positions(self) -> list[str]:
        """The names of the positions where clean and corrupted tokens differ."""
        return ["S2"] if self.corruption == "abc" else ["IO", "S1", "S2"]

    def to(self, device: torch.device | str) -> "IOIPromptSet":
        """A copy with every tensor on ``device``."""
        moved = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return replace(self, **moved)

    def subset(self, index: Sequence[int] | slice | torch.Tensor) -> "IOIPromptSet":
        """The prompts at ``index`` (a slice, a list of ints or an index tensor)."""
        if isinstance(index, slice):
            idx = list(range(len(self)))[index]
        elif isinstance(index, torch.Tensor):
            idx = [int(i) for i in index.flatten().tolist()]
        else:
            idx = [int(i) for i in index]
        t_idx = torch.tensor(idx, dtype=torch.long)
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, torch.Tensor):
                out[k] = v[t_idx.to(v.device)]
            elif isinstance(v, list) and k != "templates":
                out[k] = [v[i] for i in idx]
        return replace(self, **out)


def _resolve_prepend_bos(
    model_or_tokenizer: Any, tokenizer: Any, prepend_bos: Optional[bool]
) -> bool:
    if prepend_bos is not None:
        return bool(prepend_bos)
    cfg = getattr(model_or_tokenizer, "cfg", None)
    if cfg is not None and getattr(cfg, "default_prepend_bos", None) is not None:
        return bool(cfg.default_prepend_bos)
    # A bare tokenizer: TransformerLens prepends BOS by default whenever the tokenizer has one.
    return getattr(tokenizer, "bos_token_id", None) is not None


def _default_device(model_or_tokenizer: Any) -> torch.device:
    cfg = getattr(model_or_tokenizer, "cfg", None)
    dev = getattr(cfg, "device", None) if cfg is not None else None
    return torch.device(dev) if dev is not None else torch.device("cpu")


def make_ioi_prompts(
    model_or_tokenizer: Any,
    n_prompts: int,
    templates: Sequence[str] = IOI_TEMPLATES,
    names: Sequence[str] = IOI_NAMES,
    places: Sequence[str] = IOI_PLACES,
    objects: Sequence[str] = IOI_OBJECTS,
    corruption: Corruption = "abc",
    seed: int = 0,
    prepend_bos: Optional[bool] = None,
    name_prefix: str = " ",
    pairs: Optional[Sequence[tuple[str, str]]] = None,
    exclude_pairs: Optional[Sequence[tuple[str, str]]] = None,
    device: Optional[torch.device | str] = None,
) -> IOIPromptSet:
    """Build ``n_prompts`` IOI prompts, half ABBA and half BABA, with corrupted counterparts.

    Args:
        model_or_tokenizer: a TransformerLens model (its ``tokenizer`` and
            ``cfg.default_prepend_bos`` are used) or a Hugging Face tokenizer.
        n_prompts: number of prompts (even numbers give an exact ABBA/BABA balance).
        templates: ABBA-form templates with one ``{A}`` (IO) and two ``{B}`` (S); optional
            ``{PLACE}`` and ``{OBJECT}``.
        names: candidate names; those that are not one token (``name_prefix + name``) are
            dropped (:func:`single_token_names`). At least 3 must remain.
        places, objects: fillers; one-token ones are preferred so that prompts from a template
            share a length (multi-token fillers are used only if none is one token).
        corruption: ``"abc"`` (S2 replaced by a third name: "When A and B ..., C gave ... to") or
            ``"flip"`` (IO and S swapped everywhere, so the correct answer flips).
        seed: seed of the sampler (deterministic output).
        prepend_bos: put one BOS token at position 0. ``None``: the model's
            ``cfg.default_prepend_bos``, or for a bare tokenizer whether it has a BOS token.
            Prompts are always tokenized without the tokenizer's own special tokens, so there is
            never a doubled BOS (``transformer_lens.evals.IOIDataset`` doubles it when the
            tokenizer already adds one).
        name_prefix: text before a name when tokenizing it alone (``" "`` for GPT-2 style).
        pairs: if given, draw the two names of each prompt from these unordered pairs (which one
            is IO is random), e.g. held-out pairs.
        exclude_pairs: unordered name pairs never used as (IO, S).
        device: device of the tensors; default the model's device, else CPU.

    Returns:
        An :class:`IOIPromptSet`.
    """
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    if corruption not in _CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose one of {_CORRUPTIONS}")
    templates = list(templates)
    if not templates:
        raise ValueError("no templates given")
    for t in templates:
        _check_template(t)
    tokenizer = _get_tokenizer(model_or_tokenizer)
    bos = _resolve_prepend_bos(model_or_tokenizer, tokenizer, prepend_bos)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos and bos_id is None:
        raise ValueError("prepend_bos=True but the tokenizer has no BOS token")
    pad_id = next(
        (i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, bos_id) if i is not None), 0
    )

    ok_names = single_token_names(tokenizer, names, prefix=name_prefix)
    if len(ok_names) < 3:
        raise ValueError(
            f"only {len(ok_names)} of {len(names)} names are one token with prefix "
            f"{name_prefix!r} ({ok_names}); IOI needs at least 3. Check the tokenizer and "
            "name_prefix (use '' for tokenizers without the GPT-2 leading-space convention)."
        )
    name_set = set(ok_names)
    name_ids = {n: _single_token_id(tokenizer, n, name_prefix) for n in ok_names}
    places_ok = single_token_names(tokenizer, places, prefix=name_prefix) or list(places)
    objects_ok = single_token_names(tokenizer, objects, prefix=name_prefix) or list(objects)

    excluded = {frozenset(p) for p in (exclude_pairs or [])}
    pair_pool: Optional[list[tuple[str, str]]] = None
    if pairs is not None:
        pair_pool = [
            (a, b)
            for a, b in pairs
            if a in name_set and b in name_set and a != b and frozenset((a, b)) not in excluded
        ]
        if not pair_pool:
            raise ValueError("none of the given pairs consists of two distinct one-token names")

    rng = random.Random(seed)
    baba_templates = [babatemplate(t) for t in templates]
    slot_orders = {
        "ABBA": [_slot_order(t) for t in templates],
        "BABA": [_slot_order(t) for t in baba_templates],
    }

    rows: list[dict[str, Any]] = []
    attempts, max_attempts = 0, 20 * n_prompts + 200
    while len(rows) < n_prompts:
        attempts += 1
        if attempts > max_attempts:
            raise RuntimeError(
                f"could only build {len(rows)} of {n_prompts} IOI prompts: the names are not found "
                "as single tokens inside the tokenized prompts. Check name_prefix and that no "
                "template word equals a name token."
            )
        order = "ABBA" if len(rows) % 2 == 0 else "BABA"
        t_idx = rng.randrange(len(templates))
        if pair_pool is not None:
            a, b = rng.choice(pair_pool)
            if rng.random() < 0.5:
                a, b = b, a
        else:
            a, b = rng.sample(ok_names, 2)
            if frozenset((a, b)) in excluded:
                continue
        c = rng.choice([n for n in ok_names if n not in (a, b)])
        place, obj = rng.choice(places_ok), rng.choice(objects_ok)
        tmpl = templates[t_idx] if order == "ABBA" else baba_templates[t_idx]
        clean = _fill(tmpl, a, b, place, obj)
        if corruption == "abc":
            corrupted = _fill(tmpl, a, b, place, obj, s2=c)
        else:
            corrupted = _fill(tmpl, b, a, place, obj)
        rows.append(dict(order=order, t_idx=t_idx, a=a, b=b, c=c, clean=clean, corrupted=corrupted))
        row = rows[-1]
        positions = _locate(
            tokenizer, row, name_ids, slot_orders[order][t_idx], bos, bos_id, corruption
        )
        if positions is None:
            rows.pop()
            continue
        row.update(positions)

    prompt_set = _assemble(
        rows,
        templates,
        corruption,
        bos,
        pad_id,
        bos_id,
        name_prefix,
        name_ids,
        device if device is not None else _default_device(model_or_tokenizer),
    )
    prompt_set.metadata.update(seed=seed, n_rejected=attempts - n_prompts)
    return prompt_set


def _locate(
    tokenizer: Any,
    row: dict[str, Any],
    name_ids: dict[str, int],
    slots: list[str],
    bos: bool,
    bos_id: Optional[int],
    corruption: str,
) -> Optional[dict[str, Any]]:
    """Tokenize one clean/corrupted pair and find the name positions; None if inconsistent."""
    head = [bos_id] if bos else []
    clean = head + _encode(tokenizer, row["clean"])
    corrupted = head + _encode(tokenizer, row["corrupted"])
    if len(clean) != len(corrupted):
        return None
    a_id, b_id = name_ids[row["a"]], name_ids[row["b"]]
    a_at = [i for i, t in enumerate(clean) if t == a_id]
    b_at = [i for i, t in enumerate(clean) if t == b_id]
    if len(a_at) != 1 or len(b_at) != 2:
        return None
    io_pos, (s1_pos, s2_pos) = a_at[0], b_at
    # The token order must match the template's slot order (A/B in text order).
    found = sorted([(io_pos, "A"), (s1_pos, "B"), (s2_pos, "B")])
    if [s for _, s in found] != slots:
        return None
    expected = {s2_pos} if corruption == "abc" else {io_pos, s1_pos, s2_pos}
    diff = {i for i, (x, y) in enumerate(zip(clean, corrupted, strict=True)) if x != y}
    if diff != expected:
        return None
    return dict(
        clean_ids=clean, corrupted_ids=corrupted, io_pos=io_pos, s1_pos=s1_pos, s2_pos=s2_pos
    )


def _assemble(
    rows: list[dict[str, Any]],
    templates: list[str],
    corruption: str,
    bos: bool,
    pad_id: int,
    bos_id: Optional[int],
    name_prefix: str,
    name_ids: dict[str, int],
    device: torch.device | str,
) -> IOIPromptSet:
    max_len = max(len(r["clean_ids"]) for r in rows)
    n = len(rows)
    clean = torch.full((n, max_len), pad_id, dtype=torch.long)
    corrupted = torch.full((n, max_len), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        clean[i, : len(r["clean_ids"])] = torch.tensor(r["clean_ids"])
        corrupted[i, : len(r["corrupted_ids"])] = torch.tensor(r["corrupted_ids"])
    lengths = torch.tensor([len(r["clean_ids"]) for r in rows], dtype=torch.long)

    def col(key: str) -> torch.Tensor:
        return torch.tensor([r[key] for r in rows], dtype=torch.long)

    answers = torch.tensor([[name_ids[r["a"]], name_ids[r["b"]]] for r in rows], dtype=torch.long)
    return IOIPromptSet(
        clean_prompts=[r["clean"] for r in rows],
        corrupted_prompts=[r["corrupted"] for r in rows],
        clean_tokens=clean.to(device),
        corrupted_tokens=corrupted.to(device),
        lengths=lengths.to(device),
        answer_tokens=answers.to(device),
        end_pos=(lengths - 1).to(device),
        io_pos=col("io_pos").to(device),
        s1_pos=col("s1_pos").to(device),
        s2_pos=col("s2_pos").to(device),
        io_names=[r["a"] for r in rows],
        s_names=[r["b"] for r in rows],
        c_names=[r["c"] if corruption == "abc" else r["a"] for r in rows],
        orders=[r["order"] for r in rows],
        template_indices=[r["t_idx"] for r in rows],
        templates=list(templates),
        corruption=corruption,
        prepend_bos=bos,
        pad_token_id=int(pad_id),
        bos_token_id=bos_id,
        name_prefix=name_prefix,
    )
