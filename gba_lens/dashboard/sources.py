"""Model and tokens for ``gba-lens dashboard``: the offline stdlib LM and corpus by default,
TransformerLens / Hugging Face models and datasets otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["load_dashboard_model", "load_dashboard_tokens"]

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_dashboard_model(spec: str | None, device: str, sae: Any | None = None) -> tuple[nn.Module, str]:
    """``(model, name)``: None = the stdlib LM; a directory = a ``TransformerBridge`` of that
    ``save_pretrained`` model; otherwise a TransformerLens name, loaded the way SAELens loads the
    model an SAE was trained on (with the SAE's ``model_from_pretrained_kwargs``)."""
    if spec is None:
        from gba_lens.models.stdlib_lm import STDLIB_LM_NAME, load_stdlib_lm

        return load_stdlib_lm("hooked", device=device), STDLIB_LM_NAME
    path = Path(spec).expanduser()
    if path.is_dir():
        from transformer_lens.model_bridge import TransformerBridge

        return TransformerBridge.boot_transformers(str(path), device=device), str(path)
    from gba_lens.compat import load_model

    metadata = getattr(getattr(sae, "cfg", None), "metadata", None)
    kwargs = dict(getattr(metadata, "model_from_pretrained_kwargs", None) or {})
    return load_model("HookedTransformer", spec, device=device, model_from_pretrained_kwargs=kwargs), spec


def _chunk(texts: Any, tokenizer: Any, n_tokens: int, context: int) -> torch.Tensor:
    """Tokenise texts into one BOS-separated stream and cut ``[rows, context]`` BOS-led rows."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    body = context - 1
    need = (n_tokens // context + 1) * body
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer.encode(text, add_special_tokens=False))
        stream.append(bos)
        if len(stream) >= need:
            break
    n_rows = max(len(stream) // body, 0)
    rows = np.asarray(stream[: n_rows * body], dtype=np.int64).reshape(n_rows, body)
    return torch.cat([torch.full((n_rows, 1), bos), torch.as_tensor(rows)], dim=1)[: max(n_tokens // context, 1)]


def load_dashboard_tokens(spec: str | None, model: nn.Module, n_tokens: int, context: int) -> Any:
    """Token rows to collect over.

    ``spec``: None = the stdlib corpus's held-out (val) split, rows spread over it; a ``datasets`` ``save_to_disk``
    directory, a ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file or a Hugging Face dataset
    name (streamed), with a ``tokens`` / ``input_ids`` column or a ``text`` column (tokenised
    with the model's tokenizer); or a ``.txt`` file / directory of ``.txt`` files.
    """
    import datasets

    tokenizer = getattr(model, "tokenizer", None)
    if spec is None:
        from gba_lens.models.stdlib_lm import stdlib_token_dataset

        # rows spread over the split: its first rows are one or two files
        return stdlib_token_dataset(tokenizer, context, "val", max_tokens=max(n_tokens, context), spread=True)
    path = Path(spec).expanduser()
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()):
        ds = datasets.load_from_disk(str(path))
    elif path.suffix in _BUILDERS and path.is_file():
        ds = datasets.load_dataset(_BUILDERS[path.suffix], data_files=str(path), split="train")
    elif path.suffix == ".txt" or path.is_dir():
        files = [path] if path.is_file() else sorted(path.rglob("*.txt"))
        if not files:
            raise ValueError(f"dataset {spec}: no .txt files")
        return _chunk((f.read_text(errors="replace") for f in files), tokenizer, n_tokens, context)
    elif spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset {spec!r} does not exist")
    else:
        ds = datasets.load_dataset(spec, split="train", streaming=True)
    names = ds.column_names or next(iter(ds)).keys()
    column = next((c for c in ("tokens", "input_ids") if c in names), None)
    if column is not None:
        return ds.select_columns([column]) if hasattr(ds, "select_columns") else ds
    if "text" not in names:
        raise ValueError(f"dataset {spec} needs a 'tokens', 'input_ids' or 'text' column, has {list(names)}")
    if tokenizer is None:
        raise ValueError(f"dataset {spec} holds text but the model has no tokenizer")
    return _chunk((row["text"] for row in ds), tokenizer, n_tokens, context)
