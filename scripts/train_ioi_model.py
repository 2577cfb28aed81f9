#!/usr/bin/env python
"""Train the tiny offline IOI model shipped in ``gba_lens/assets/ioi_model/``.

A 2-layer attention-only HookedTransformer (d_model 64, 4 heads, d_head 16, n_ctx 32) with a
word-level tokenizer learns indirect object identification from templated sentences:

* 100 one-token names, 15 templates in ABBA and BABA order; 2 templates and 10% of the unordered
  name pairs are held out (the split is fixed by ``--split-seed``; every name still appears as
  an answer in training, since a name never seen as the answer cannot be predicted);
* loss = next-token LM loss on the whole sentence + an extra cross-entropy on the answer token
  (LM loss alone failed on some seeds in a trial);
* Adam (no weight decay, no gradient clipping), batch 128, lr 3e-3: a 20-step warmup, constant
  until 60% of the steps, then cosine decay to 10%. With the answer loss weighted 3x the model
  learns the task (answer loss leaves the log(2) plateau of guessing between the two names)
  around step 200-300 in the seeds tried; with weight 1 and clipping it often took 400+ steps.

After training the held-out logit differences and accuracies are checked against thresholds; if
they fail, training is retried with the next seed. Outputs (no pickles): ``model.safetensors``,
``config.json``, the tokenizer (``save_pretrained``), ``split.json`` and ``training_info.json``.

Usage::

    HF_HUB_OFFLINE=1 python scripts/train_ioi_model.py            # rebuild the committed assets
    python scripts/train_ioi_model.py --out-dir /tmp/ioi --steps 300
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}.items():
    os.environ.setdefault(_k, _v)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from gba_lens.circuits.ioi import (  # noqa: E402
    IOI_NAMES,
    IOI_OBJECTS,
    IOI_PLACES,
    IOI_TEMPLATES,
    IOIPromptSet,
    logit_diff,
    make_ioi_prompts,
)
from gba_lens.models.ioi_model import (  # noqa: E402
    CONFIG_FILE,
    IOI_MODEL_DIR,
    SPLIT_FILE,
    TRAINING_INFO_FILE,
    WEIGHTS_FILE,
    IOISplit,
    ioi_heldout_prompts,
    load_ioi_model,
)

SPECIAL_TOKENS = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}
# The same split of words as the `tokenizers` Whitespace pre-tokenizer (\w+|[^\w\s]+).
_WORD_RE = re.compile(r"\w+|[^\w\s]+")


def build_tokenizer(out_dir: Path, words: list[str]) -> Any:
    """Word-level tokenizer over ``words``; saved with ``save_pretrained`` and reloaded from disk.

    TransformerLens re-loads a tokenizer by its ``name_or_path`` (to switch on ``add_bos_token``),
    so an in-memory tokenizer is not enough.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in list(SPECIAL_TOKENS.values()) + words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    # transformers 5 writes "TokenizersBackend"; PreTrainedTokenizerFast loads in 4.x too.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return PreTrainedTokenizerFast.from_pretrained(str(out_dir))


def _template_words(template: str) -> set[str]:
    for slot in ("{A}", "{B}", "{PLACE}", "{OBJECT}"):
        template = template.replace(slot, " ")
    return set(_WORD_RE.findall(template))


def vocabulary(split: IOISplit) -> list[str]:
    """Names first (stable ids), then every other word of the templates, places and objects."""
    others = set().union(
        *(_template_words(t) for t in split.train_templates + split.heldout_templates)
    )
    others |= set(split.places) | set(split.objects)
    return list(split.names) + sorted(others - set(split.names))


def make_split(split_seed: int, n_heldout_templates: int = 2, pair_frac: float = 0.1) -> IOISplit:
    """Hold out templates and unordered name pairs; every name keeps training pairs."""
    rng = random.Random(split_seed)
    templates = list(IOI_TEMPLATES)
    # A word-level model has untrained embeddings for words it never saw, so held-out templates
    # are drawn among those whose words all occur in the training templates (new combinations
    # of known words and new name positions, not new words).
    for _ in range(1000):
        held_t = sorted(rng.sample(range(len(templates)), n_heldout_templates))
        seen = set().union(
            *(_template_words(t) for i, t in enumerate(templates) if i not in held_t)
        )
        if all(_template_words(templates[i]) <= seen for i in held_t):
            break
    else:
        raise RuntimeError("no set of held-out templates is covered by the training vocabulary")
    pairs = list(itertools.combinations(IOI_NAMES, 2))
    held_p = rng.sample(pairs, round(pair_frac * len(pairs)))
    return IOISplit(
        train_templates=[t for i, t in enumerate(templates) if i not in held_t],
        heldout_templates=[templates[i] for i in held_t],
        heldout_pairs=[tuple(p) for p in held_p],  # type: ignore[misc]
        names=list(IOI_NAMES),
        places=list(IOI_PLACES),
        objects=list(IOI_OBJECTS),
        name_prefix=" ",
    )


def model_config(d_vocab: int, seed: int) -> dict[str, Any]:
    """HookedTransformerConfig keyword arguments (also written to config.json)."""
    return dict(
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_head=16,
        n_ctx=32,
        d_vocab=d_vocab,
        attn_only=True,
        normalization_type="LN",
        positional_embedding_type="standard",
        act_fn="gelu",  # unused (attention-only) but required by the config
        default_prepend_bos=True,
        seed=seed,
    )


def with_answers(ps: IOIPromptSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences ``prompt + answer`` (right-padded) and a mask of the LM target positions."""
    n, t = ps.clean_tokens.shape
    seq = torch.full((n, t + 1), ps.pad_token_id, dtype=torch.long)
    seq[:, :t] = ps.clean_tokens
    seq[torch.arange(n), ps.lengths] = ps.correct_tokens
    # Position p predicts token p+1; real targets are positions 0..length-1 (length = prompt len).
    pos = torch.arange(t)
    target_mask = pos[None, :] < ps.lengths[:, None]
    return seq, target_mask


@torch.no_grad()
def evaluate(model: Any, ps: IOIPromptSet) -> dict[str, float]:
    """Mean/std logit difference, accuracy (IO > S) and top-1 accuracy (IO is the argmax)."""
    logits = model(ps.clean_tokens)
    ld = logit_diff(logits, ps)
    final = logits[torch.arange(len(ps)), ps.end_pos]
    corrupted_ld = logit_diff(model(ps.corrupted_tokens), ps)
    return {
        "logit_diff_mean": round(float(ld.mean()), 4),
        "logit_diff_std": round(float(ld.std()), 4),
        "accuracy": round(float((ld > 0).float().mean()), 4),
        "top1_accuracy": round(float((final.argmax(-1) == ps.correct_tokens).float().mean()), 4),
        "abc_corrupted_logit_diff_mean": round(float(corrupted_ld.mean()), 4),
        "n_prompts": len(ps),
    }


def train_once(
    out_dir: Path, split: IOISplit, tokenizer: Any, seed: int, args: argparse.Namespace
) -> tuple[Any, dict[str, Any]]:
    """Train one model with ``seed``; returns it with its training record."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg_kwargs = model_config(len(tokenizer), seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(HookedTransformerConfig(**cfg_kwargs), tokenizer=tokenizer)
    pool = make_ioi_prompts(
        tokenizer,
        args.pool_size,
        templates=split.train_templates,
        names=split.names,
        places=split.places,
        objects=split.objects,
        exclude_pairs=split.heldout_pairs,
        seed=seed,
        prepend_bos=True,
        device="cpu",
    )
    seq_all, mask_all = with_answers(pool)
    if seq_all.shape[1] > cfg_kwargs["n_ctx"]:
        raise ValueError(
            f"sequences of {seq_all.shape[1]} tokens exceed n_ctx {cfg_kwargs['n_ctx']}"
        )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup, decay_start = 20, int(0.6 * args.steps)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < decay_start:
            return 1.0
        frac = (step - decay_start) / max(1, args.steps - decay_start)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(args.steps), desc=f"IOI seed {seed}", leave=False)
    for _step in bar:
        idx = torch.randint(len(pool), (args.batch_size,), generator=gen)
        seq, mask, end = seq_all[idx], mask_all[idx], pool.end_pos[idx]
        width = int(pool.lengths[idx].max()) + 1
        seq, mask = seq[:, :width], mask[:, : width - 1]
        logits = model(seq[:, :-1])
        lm = F.cross_entropy(logits[mask], seq[:, 1:][mask])
        answer_logits = logits[torch.arange(len(idx)), end]
        answer = F.cross_entropy(answer_logits, seq[torch.arange(len(idx)), end + 1])
        loss = lm + args.answer_weight * answer
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if _step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", answer=f"{answer.item():.3f}")
    model.eval()
    return model, {"config": cfg_kwargs, "final_loss": round(sum(losses[-20:]) / 20, 4)}


def save_model(model: Any, cfg_kwargs: dict[str, Any], out_dir: Path) -> None:
    """Weights as safetensors (parameters only; buffers are rebuilt) and the config as JSON."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.named_parameters()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    os.chmod(out_dir / WEIGHTS_FILE, 0o644)  # safetensors writes 0600; the file is package data
    (out_dir / CONFIG_FILE).write_text(json.dumps(cfg_kwargs, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, default=IOI_MODEL_DIR)
    p.add_argument("--seed", type=int, default=0, help="first training seed")
    p.add_argument("--max-tries", type=int, default=5, help="seeds to try before giving up")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--answer-weight", type=float, default=3.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=0.0, help="gradient-norm clip (0: none)")
    p.add_argument("--pool-size", type=int, default=20000, help="training prompts generated")
    p.add_argument("--min-logit-diff", type=float, default=5.0)
    p.add_argument("--min-accuracy", type=float, default=0.97)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    out_dir: Path = args.out_dir
    split = make_split(args.split_seed)
    tokenizer = build_tokenizer(out_dir, vocabulary(split))
    (out_dir / SPLIT_FILE).write_text(json.dumps(split.to_dict(), indent=1) + "\n")

    for seed in range(args.seed, args.seed + args.max_tries):
        t0, c0 = time.perf_counter(), time.process_time()
        model, record = train_once(out_dir, split, tokenizer, seed, args)
        train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        save_model(model, record["config"], out_dir)
        # Evaluate the reloaded files, exactly as users and tests will load them.
        reloaded = load_ioi_model("cpu", path=out_dir)
        results = {
            s: evaluate(
                reloaded, ioi_heldout_prompts(reloaded, s, args.n_eval, seed=1234, path=out_dir)
            )
            for s in ("train", "pairs", "templates", "both")
        }
        ok = all(
            r["logit_diff_mean"] > args.min_logit_diff and r["accuracy"] >= args.min_accuracy
            for s, r in results.items()
        )
        print(
            f"seed {seed}: {train_s:.1f}s, "
            + ", ".join(
                f"{s}: LD {r['logit_diff_mean']:.2f} acc {r['accuracy']:.3f}"
                for s, r in results.items()
            )
        )
        if not ok:
            print(f"seed {seed} below thresholds, trying the next seed", file=sys.stderr)
            continue
        sizes = {
            f.name: f.stat().st_size
            for f in sorted(out_dir.iterdir())
            if f.is_file() and f.name != TRAINING_INFO_FILE
        }
        info = {
            "seed": seed,
            "split_seed": args.split_seed,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "answer_weight": args.answer_weight,
            "weight_decay": args.weight_decay,
            "clip": args.clip,
            "final_train_loss": record["final_loss"],
            "train_seconds": round(train_s, 1),
            "train_cpu_seconds": round(train_cpu_s, 1),
            "train_seconds_note": "wall and CPU time of prompt generation + training, one thread",
            "torch_threads": args.threads,
            "torch_version": torch.__version__,
            "n_params": sum(p.numel() for p in model.parameters()),
            "d_vocab": len(tokenizer),
            "n_heldout_pairs": len(split.heldout_pairs),
            "heldout_templates": split.heldout_templates,
            "thresholds": {
                "min_logit_diff": args.min_logit_diff,
                "min_accuracy": args.min_accuracy,
            },
            "eval": results,
            "eval_note": "eval seed 1234; 'pairs' = held-out pairs in training templates, "
            "'templates' = held-out templates with training pairs, 'both' = both held out",
            "file_bytes": sizes,
        }
        (out_dir / TRAINING_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"no seed in {args.seed}..{args.seed + args.max_tries - 1} met the thresholds",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
