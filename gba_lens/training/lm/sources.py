"""Where ``gba-lens train`` gets its model, hook points and tokens from.

- Models: a TransformerLens model name (``gpt2``, downloaded as usual) is loaded the way SAELens's
  own runner loads it (``sae_lens.load_model``: ``HookedTransformer.from_pretrained_no_processing``
  with SAELens's default ``center_writing_weights=False``), so SAEs trained here match SAELens's
  conventions; a local Hugging Face directory (``save_pretrained``) is booted as a
  ``TransformerBridge`` (``HookedTransformer`` cannot load a local model offline); no model means
  the offline stdlib LM shipped with gba_lens.
- Hook names are checked against ``model.hook_dict`` before anything is trained (the bridge's
  ``run_with_hooks`` silently ignores unknown names), and each hook's width (``d_in``) is measured
  with one tiny forward pass.
- Tokens: a Hugging Face dataset name (streamed by SAELens's ``ActivationsStore``), local files
  (text, ``.jsonl``/``.parquet``/``.csv``, a token ``.safetensors``, a ``save_to_disk`` directory),
  or, with no dataset, the Python stdlib corpus tokenised by the model's tokenizer. Every source
  also yields held-out tokens for the final evaluation (no token used in training is evaluated).
"""

from __future__ import annotations

import glob
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import nn

from gba_lens.adapters.hooks import (
    gating_switch,
    get_hook_dict,
    probe_activations,
    resolve_hook_points,
)
from gba_lens.data.stdlib_corpus import STDLIB_DATASET_NAME, stdlib_token_dataset
from gba_lens.data.tokens import chunk_stream, rows_dataset, tokenize_corpus

if TYPE_CHECKING:
    import datasets

    from gba_lens.training.lm.report import LMTrainResults

__all__ = [
    "STDLIB_DATASET_NAME",
    "LoadedModel",
    "ModelKind",
    "TokenSource",
    "check_d_in",
    "default_hook",
    "held_out_after",
    "held_out_tokens",
    "load_model",
    "load_tokens",
    "rows_dataset",  # kept for one release: moved to gba_lens.data.tokens
    "validate_hooks",
    "wrap_model",
]

logger = logging.getLogger(__name__)

ModelKind = Literal["auto", "hooked", "bridge"]


_TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".text", ""}
_BUILDER_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


# ---------------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    """A TransformerLens model plus what SAELens records about it in SAE metadata."""

    model: nn.Module
    model_name: str
    model_class_name: str
    from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_ctx(self) -> int:
        return int(getattr(self.model.cfg, "n_ctx", 1024) or 1024)

    @property
    def n_layers(self) -> int:
        return int(getattr(self.model.cfg, "n_layers", 1) or 1)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.model, "tokenizer", None)


def load_model(spec: str | None, kind: ModelKind = "auto", device: str = "cpu") -> LoadedModel:
    """Load the model ``gba-lens train`` trains on.

    Args:
        spec: ``None`` (the offline stdlib LM), a local directory saved with ``save_pretrained``
            (booted as a ``TransformerBridge``), or a TransformerLens model name.
        kind: ``hooked`` / ``bridge`` to force a class; ``auto`` picks as above.
        device: torch device.
    """
    if kind not in ("auto", "hooked", "bridge"):
        raise ValueError(f"model kind must be auto, hooked or bridge, got {kind!r}")
    if spec is None:
        from gba_lens.models.stdlib_lm import STDLIB_LM_NAME, load_stdlib_lm

        model_kind = "bridge" if kind == "bridge" else "hooked"
        model = load_stdlib_lm(model_kind, device=device)
        cls = "TransformerBridge" if model_kind == "bridge" else "HookedTransformer"
        return LoadedModel(model, STDLIB_LM_NAME, cls)
    path = Path(spec).expanduser()
    if path.is_dir():
        if kind == "hooked":
            raise ValueError(
                f"{spec} is a local directory: HookedTransformer cannot load local models offline "
                "(it fetches the hub config). Use --model-kind bridge (the default for directories)."
            )
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{spec} has no config.json: not a Hugging Face save_pretrained directory")
        return LoadedModel(_boot_bridge(str(path), device), str(path), "TransformerBridge")
    if path.exists():
        raise ValueError(f"--model {spec} is a file; pass a model name or a save_pretrained directory")
    if kind == "bridge":
        return LoadedModel(_boot_bridge(spec, device), spec, "TransformerBridge")
    from gba_lens.compat import load_model as saelens_load_model

    # The same call and defaults as LanguageModelSAETrainingRunner uses when it loads the model.
    kwargs: dict[str, Any] = {"center_writing_weights": False}
    model = saelens_load_model("HookedTransformer", spec, device=device, model_from_pretrained_kwargs=kwargs)
    return LoadedModel(model, spec, "HookedTransformer", kwargs)


def wrap_model(model: nn.Module, spec: str | None) -> LoadedModel:
    """An already-loaded model, named by ``spec``, its config's ``model_name`` or the stdlib LM's name."""
    from gba_lens.models.stdlib_lm import STDLIB_LM_NAME

    name = spec or getattr(getattr(model, "cfg", None), "model_name", None) or STDLIB_LM_NAME
    return LoadedModel(model, str(name), type(model).__name__)


def _boot_bridge(name_or_path: str, device: str) -> nn.Module:
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(name_or_path, device=device, dtype=torch.float32)
    return bridge.eval()


# ------------------------------------------------------------------------------ hook names
def default_hook(loaded: LoadedModel) -> str:
    """The residual stream entering the middle layer (``blocks.6.hook_resid_pre`` on GPT-2)."""
    return f"blocks.{loaded.n_layers // 2}.hook_resid_pre"


def validate_hooks(model: nn.Module, hook_names: list[str]) -> dict[str, int]:
    """Check every name against ``model.hook_dict`` and measure its width (SAE ``d_in``).

    Raises :class:`gba_lens.adapters.UnknownHookNameError` (a ``ValueError`` and ``KeyError``)
    listing close matches for an unknown name. Hooks that only fire after a model switch
    (``attn.hook_result`` & co.) are switched on. Head-indexed hooks (``attn.hook_z``) are
    flattened, as SAELens's ``ActivationsStore`` does.
    """
    if not hook_names:
        raise ValueError("no hook name given")
    dupes = sorted({h for h in hook_names if hook_names.count(h) > 1})
    if dupes:
        raise ValueError(f"hook names given more than once: {dupes}")
    points = resolve_hook_points(model, hook_names)
    switch = gating_switch(model, hook_names)
    if switch is not None:
        attribute, setter = switch
        logger.info("switching on model.cfg.%s so that the requested hooks fire", attribute)
        getattr(model, setter)(True)
    specs = probe_activations(model, points)
    widths: dict[str, int] = {}
    for name in hook_names:
        if name not in specs:
            raise ValueError(
                f"hook {name!r} exists but did not fire in a forward pass of this model; "
                f"known hooks: {len(get_hook_dict(model))} (see model.hook_dict)"
            )
        widths[name] = int(math.prod(specs[name].feature_shape))
    return widths


def check_d_in(hook_name: str, expected: int, found: int, where: str) -> None:
    """Raise a clear error when a stored width does not match the hook's width."""
    if expected != found:
        raise ValueError(
            f"d_in mismatch for {hook_name!r}: the model's hook has width {expected}, "
            f"but {where} has d_in {found}"
        )


# ---------------------------------------------------------------------------------- tokens
@dataclass
class TokenSource:
    """Training and held-out evaluation tokens.

    ``train`` is ``None`` for a Hugging Face dataset name (SAELens streams it from
    ``dataset_path``); the held-out tokens are then the rows after those used in training
    (see :func:`held_out_after`). ``eval`` is set up front for every other source.
    """

    dataset_path: str
    context_size: int
    train: "datasets.Dataset | None"
    eval: "datasets.Dataset | datasets.IterableDataset | None"
    streaming: bool = False


def _need_tokenizer(loaded: LoadedModel, what: str) -> Any:
    tok = loaded.tokenizer
    if tok is None:
        raise ValueError(f"{what} needs the model's tokenizer, but this model has none; pass tokenised data")
    return tok


def _text_files(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _TEXT_SUFFIXES and not p.name.startswith("."))
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"no text files found for dataset {spec!r}")
    return files


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _split_rows(ds: "datasets.Dataset", eval_rows: int, what: str) -> tuple["datasets.Dataset", "datasets.Dataset"]:
    """Last ``eval_rows`` rows (at most a fifth of the data) held out for evaluation."""
    n = len(ds)
    n_eval = min(eval_rows, n // 5)
    if n_eval < 1:
        raise ValueError(f"{what} has only {n} rows: too few to hold out evaluation tokens")
    return ds.select(range(n - n_eval)), ds.select(range(n - n_eval, n))


def load_tokens(
    spec: str | None,
    loaded: LoadedModel,
    context_size: int | None,
    train_tokens: int,
    eval_tokens: int,
) -> TokenSource:
    """Resolve ``--dataset`` (see the module docstring) into training and held-out tokens.

    ``train_tokens`` bounds how much of the stdlib corpus is tokenised (a short run does not
    tokenise all of it); ``eval_tokens`` is the held-out budget.
    """
    import datasets

    n_ctx = loaded.n_ctx
    if context_size is not None and not 2 <= context_size <= n_ctx:
        raise ValueError(f"context_size must be in [2, {n_ctx}] (the model's n_ctx), got {context_size}")

    if spec is None:  # the stdlib corpus: train split for training, val split held out
        tok = _need_tokenizer(loaded, "the default stdlib dataset")
        ctx = context_size or min(n_ctx, 128)
        # Rows spread over each whole split: the files are in path order, so the first rows of a
        # split are a few modules (an SAE trained on them reconstructs the rest of the stdlib far
        # worse, and a small held-out set of them ranks SAEs by one file).
        train = stdlib_token_dataset(tok, ctx, "train", max_tokens=max(train_tokens, ctx), spread=True)
        val = stdlib_token_dataset(tok, ctx, "val", max_tokens=max(eval_tokens, ctx), spread=True)
        return TokenSource(STDLIB_DATASET_NAME, ctx, train, val)

    path = Path(spec).expanduser()
    eval_rows_for = lambda ctx: max(1, math.ceil(eval_tokens / ctx))  # noqa: E731
    if _is_saved_dataset(path):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            held = next((ds[s] for s in ("validation", "test", "val") if s in ds), None)
            if "train" not in ds:
                raise ValueError(f"{spec}: a DatasetDict without a 'train' split ({list(ds)})")
            train_ds = ds["train"]
        else:
            train_ds, held = ds, None
        ctx = context_size or _row_context(train_ds, n_ctx)
        _check_vocab(train_ds, loaded, spec)
        if held is None:
            train_ds, held = _split_rows(train_ds, eval_rows_for(ctx), spec)
        return TokenSource(str(path), ctx, train_ds, held)
    if path.is_file() and path.suffix == ".safetensors":
        rows = _safetensors_rows(path, loaded, context_size or min(n_ctx, 128))
        _check_vocab(rows, loaded, spec)
        ctx = context_size or min(rows.shape[1], n_ctx)
        train_ds, held = _split_rows(rows_dataset(rows), eval_rows_for(ctx), spec)
        return TokenSource(str(path), ctx, train_ds, held)
    if path.is_file() and path.suffix in _BUILDER_BY_SUFFIX:
        ds = datasets.load_dataset(_BUILDER_BY_SUFFIX[path.suffix], data_files=str(path), split="train")
        if "tokens" not in ds.column_names and "input_ids" not in ds.column_names:
            if "text" not in ds.column_names:
                raise ValueError(f"{spec} needs a 'text', 'tokens' or 'input_ids' column, has {ds.column_names}")
            rows = _tokenise_texts(list(ds["text"]), loaded, context_size or min(n_ctx, 128))
            ds = rows_dataset(rows)
        ctx = context_size or _row_context(ds, n_ctx)
        train_ds, held = _split_rows(ds, eval_rows_for(ctx), spec)
        return TokenSource(str(path), ctx, train_ds, held)
    if path.exists() or any(c in spec for c in "*?["):
        texts = [p.read_bytes().decode("utf-8", errors="replace") for p in _text_files(spec)]
        ctx = context_size or min(n_ctx, 128)
        rows = _tokenise_texts(texts, loaded, ctx)
        train_ds, held = _split_rows(rows_dataset(rows), eval_rows_for(ctx), spec)
        return TokenSource(str(path), ctx, train_ds, held)
    if spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset {spec!r} does not exist")
    # A Hugging Face dataset name: SAELens streams it (tokenised or text, as its runner does).
    return TokenSource(spec, context_size or min(n_ctx, 128), None, None, streaming=True)


def held_out_after(source: TokenSource, rows_used: int) -> "datasets.IterableDataset":
    """For a streamed HF dataset: the rows after the ``rows_used`` that training consumed."""
    import datasets

    stream = datasets.load_dataset(source.dataset_path, split="train", streaming=True)
    # +1: SAELens's ActivationsStore counts a row once the next one is requested, so the row in
    # flight when training stopped is not in its n_dataset_processed yet.
    return stream.skip(rows_used + 1)


def held_out_tokens(results: "LMTrainResults", n_rows: int) -> Int[torch.Tensor, "n_rows context"]:
    """``n_rows`` rows of held-out tokens (never trained on) from the run's dataset.

    The same held-out data the final evaluation used: the stdlib ``val`` split, the rows held
    back from local data, or the rows of a streamed dataset after those training consumed.
    Handy for looking at top-activating contexts of features. Text rows are tokenised with the
    model's tokenizer and cut into BOS-prefixed rows of the run's context size.
    """
    source = results.token_source
    ctx = source.context_size
    data = source.eval if source.eval is not None else held_out_after(source, results.dataset_rows_used)
    rows: list[list[int]] = []
    texts: list[str] = []
    for row in data:
        column = "tokens" if "tokens" in row else "input_ids" if "input_ids" in row else None
        if column is not None:
            tokens = list(row[column])
            if len(tokens) >= ctx:
                rows.append([int(t) for t in tokens[:ctx]])
        elif "text" in row:
            texts.append(row["text"])
        if len(rows) >= n_rows or sum(len(t) for t in texts) > 8 * n_rows * ctx:
            break
    if texts:
        tok = results.model.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        rows += chunk_stream(tokenize_corpus(tok, texts), ctx, int(bos)).tolist()
    if not rows:
        raise ValueError("no held-out rows of the run's context size are available")
    return torch.tensor(rows[:n_rows], dtype=torch.long)


def _check_vocab(data: Any, loaded: LoadedModel, spec: str) -> None:
    """Token ids must index the model's vocabulary (checked on the first rows)."""
    d_vocab = getattr(loaded.model.cfg, "d_vocab", None)
    if isinstance(data, np.ndarray):
        sample = data[:256]
    else:
        column = "tokens" if "tokens" in data.column_names else "input_ids" if "input_ids" in data.column_names else None
        if column is None:
            return  # text: tokenised by the model's own tokenizer
        sample = np.asarray(data[: min(len(data), 256)][column])
    if sample.size and (sample.min() < 0 or (d_vocab is not None and sample.max() >= d_vocab)):
        raise ValueError(
            f"{spec}: token ids span [{sample.min()}, {sample.max()}], outside the model's vocabulary "
            f"of {d_vocab}; was it tokenised for another model?"
        )


def _row_context(ds: "datasets.Dataset", n_ctx: int) -> int:
    column = "tokens" if "tokens" in ds.column_names else "input_ids" if "input_ids" in ds.column_names else None
    if column is None:
        return min(n_ctx, 128)
    return min(len(ds[0][column]), n_ctx)


def _tokenise_texts(texts: list[str], loaded: LoadedModel, ctx: int) -> np.ndarray:
    tok = _need_tokenizer(loaded, "text data")
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if bos is None or tok.eos_token_id is None:
        raise ValueError("text data needs a tokenizer with a BOS or EOS token (used as separator)")
    rows = chunk_stream(tokenize_corpus(tok, texts), ctx, int(bos))
    if len(rows) == 0:
        raise ValueError(f"the text data is shorter than one context ({ctx} tokens)")
    return rows


def _safetensors_rows(path: Path, loaded: LoadedModel, ctx: int) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    key = next((k for k in ("tokens", "input_ids") if k in tensors), None)
    if key is None:
        if len(tensors) != 1:
            raise ValueError(f"{path} holds {sorted(tensors)}; name the token tensor 'tokens'")
        key = next(iter(tensors))
    tokens = tensors[key]
    if tokens.dtype.is_floating_point:
        raise TypeError(f"{path}:{key} must hold integer token ids, got {tokens.dtype}")
    if tokens.ndim == 2:
        return tokens.long().numpy()
    if tokens.ndim == 1:  # one token stream: cut into BOS-prefixed rows
        tok = loaded.tokenizer
        bos = None if tok is None else (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
        if bos is None:
            raise ValueError(f"{path} holds a 1-D token stream; cutting it into rows needs a BOS token")
        return chunk_stream(tokens.numpy(), ctx, int(bos))
    raise ValueError(f"{path}:{key} must be [n_rows, context] or a 1-D token stream, got shape {tuple(tokens.shape)}")
