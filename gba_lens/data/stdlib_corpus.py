"""The Python standard library as an offline corpus (what the stdlib LM is trained and evaluated on).

Every machine that runs Python has the standard library's source, so it is a corpus that needs no
network. :func:`stdlib_corpus` gives the train / val split of the stdlib files (fixed per file by a
hash of its relative path); :func:`stdlib_token_dataset` gives BOS-prefixed token rows in a
``datasets.Dataset`` with a ``"tokens"`` column, ready for SAELens's
``LanguageModelSAETrainingRunner(cfg, override_model=..., override_dataset=...)``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from jaxtyping import Int

from gba_lens.data.tokens import chunk_stream, rows_dataset, special_token_id, tokenize_corpus

if TYPE_CHECKING:
    import datasets

__all__ = [
    "STDLIB_DATASET_NAME",
    "VAL_MODULUS",
    "split_token_stream",
    "stdlib_corpus",
    "stdlib_files",
    "stdlib_root",
    "stdlib_token_dataset",
    "token_cache_dir",
    "unigram_cross_entropy",
]

#: Recorded as ``dataset_path`` in SAE metadata when the stdlib corpus is used.
STDLIB_DATASET_NAME = "gba-lens/stdlib-corpus"

#: One file in ``1 / VAL_MODULUS`` (by hash of its relative path) is held out for validation.
VAL_MODULUS = 20

#: Default row length of :func:`stdlib_token_dataset`: the stdlib LM's ``n_ctx``.
DEFAULT_CONTEXT_SIZE = 128

_TEST_DIR_NAMES = frozenset({"test", "tests", "idle_test"})
# Not Python code people write: machine-specific build data and generated documentation text.
_EXCLUDED_TOP_LEVEL = frozenset({"site-packages", "dist-packages", "lib-dynload", "pydoc_data"})

Split = Literal["train", "val"]


def stdlib_root() -> Path:
    """Directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _is_excluded(rel: Path) -> bool:
    parts = rel.parts
    if parts[0] in _EXCLUDED_TOP_LEVEL or parts[0].startswith("config-"):
        return True
    if any(p in _TEST_DIR_NAMES or p == "__pycache__" for p in parts[:-1]):
        return True
    name = parts[-1]
    return (
        name.startswith("test_")
        or name.endswith("_test.py")
        or name.startswith("_sysconfigdata")
    )


def _split_of(rel_posix: str) -> Split:
    digest = hashlib.sha256(rel_posix.encode("utf-8")).hexdigest()
    return "val" if int(digest[:8], 16) % VAL_MODULUS == 0 else "train"


def _check_split(split: str) -> Split:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return split  # type: ignore[return-value]


def stdlib_files(split: Split = "train", root: Path | None = None) -> list[Path]:
    """Sorted non-test ``.py`` files of the standard library in ``split``.

    The split is fixed per file by a SHA-256 hash of its path relative to the stdlib root (about
    one file in 20 is held out), so it does not depend on the order files are found in, and a
    file keeps its split across Python versions.
    """
    split = _check_split(split)
    root = stdlib_root() if root is None else Path(root).resolve()
    return [path for _, path, s in _scan(root) if s == split]


@functools.lru_cache(maxsize=4)
def _scan(root: Path) -> tuple[tuple[str, Path, Split], ...]:
    """(relative posix path, path, split) of every corpus file, sorted; cached per process."""
    if not root.is_dir():
        raise FileNotFoundError(f"standard library directory not found: {root}")
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if _is_excluded(rel) or not path.is_file():
            continue
        rel_posix = rel.as_posix()
        out.append((rel_posix, path, _split_of(rel_posix)))
    return tuple(sorted(out, key=lambda item: item[0]))


def stdlib_corpus(split: Split = "train", root: Path | None = None) -> list[str]:
    """Text of every file from :func:`stdlib_files` (UTF-8, undecodable bytes replaced)."""
    return [_read_text(p) for p in stdlib_files(split, root)]


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


# Token streams of whole splits, per (stdlib root, split, tokenizer fingerprint): kept in memory, and on
# disk (:func:`token_cache_dir`) so that every new process (a torchrun rank, a notebook kernel, a CLI run)
# loads the train split in milliseconds instead of tokenising it again (several seconds).
_STREAM_CACHE: dict[tuple[str, str, str], np.ndarray] = {}

#: Environment variable naming the directory of the tokenised splits ("off": memory only).
CACHE_ENV = "GBA_LENS_CACHE"


def token_cache_dir() -> Path | None:
    """Where whole tokenised splits are kept between processes: ``$GBA_LENS_CACHE``, else
    ``$XDG_CACHE_HOME/gba_lens``, else ``~/.cache/gba_lens``; None (memory only) when ``$GBA_LENS_CACHE``
    is "off" or no home directory is found."""
    chosen = os.environ.get(CACHE_ENV, "")
    if chosen.strip().lower() == "off":
        return None
    if chosen:
        return Path(chosen).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "gba_lens"
    try:
        return Path.home() / ".cache" / "gba_lens"
    except RuntimeError:  # no home directory to be found: memory only
        return None


def _stream_file(root: Path, split: Split, fingerprint: str) -> Path | None:
    """The cache file of a whole split: named by the tokenizer's fingerprint and by every file's path, size
    and mtime, so that a changed standard library (an interpreter upgraded in place) is tokenised again."""
    directory = token_cache_dir()
    if directory is None:
        return None
    digest = hashlib.sha1(f"{root}|{split}|{fingerprint}".encode("utf-8"))
    for path in stdlib_files(split, root):
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode("utf-8"))
    return directory / f"stdlib-{split}-{digest.hexdigest()[:20]}.npy"


def _load_stream(path: Path) -> np.ndarray | None:
    """A cached stream (never unpickled), or None where it is missing, empty, cut short or not a 1-D int32
    array."""
    try:
        stream = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # EOFError: an empty file
        return None
    return stream if stream.ndim == 1 and stream.dtype == np.int32 and len(stream) > 0 else None


def _save_stream(path: Path, stream: np.ndarray) -> None:
    """Written to a file of this process and renamed into place (a reader never sees half a file; two
    processes writing at once leave one whole copy). A directory that cannot be written is skipped:
    the next process tokenises again."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            np.save(f, stream, allow_pickle=False)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def split_token_stream(
    tokenizer: Any, split: Split = "train", min_tokens: int | None = None
) -> Int[np.ndarray, " n_tokens"]:
    """Token stream of a split (see :func:`~gba_lens.data.tokens.tokenize_corpus`).

    With ``min_tokens``, only the first files needed to reach that many tokens are tokenised
    (unless the whole split is already cached); otherwise the whole split is tokenised once and cached in
    memory and on disk (:func:`token_cache_dir`).
    """
    split = _check_split(split)
    root, fingerprint = stdlib_root(), _tokenizer_fingerprint(tokenizer)
    key = (str(root), split, fingerprint)
    if key in _STREAM_CACHE:
        return _STREAM_CACHE[key]
    on_disk = _stream_file(root, split, fingerprint)
    stream = None if on_disk is None else _load_stream(on_disk)
    if stream is None and min_tokens is not None:
        # Read and tokenise only the first files. Code averages ~3.5 characters per token here;
        # budgeting 5 per token leaves a margin.
        files, texts, budget = stdlib_files(split), [], 5 * min_tokens
        while len(texts) < len(files) and budget > 0:
            texts.append(_read_text(files[len(texts)]))
            budget -= len(texts[-1])
        first = tokenize_corpus(tokenizer, texts)
        if len(first) >= min_tokens or len(texts) == len(files):
            return first
    if stream is None:
        stream = tokenize_corpus(tokenizer, stdlib_corpus(split))
        if on_disk is not None:
            _save_stream(on_disk, stream)
    stream.flags.writeable = False  # shared by later callers
    _STREAM_CACHE[key] = stream
    return stream


def stdlib_token_dataset(
    tokenizer: Any,
    context_size: int = DEFAULT_CONTEXT_SIZE,
    split: Split = "train",
    max_tokens: int | None = None,
    spread: bool = False,
) -> "datasets.Dataset":
    """Tokenised stdlib split as a ``datasets.Dataset`` with a ``"tokens"`` column.

    Rows are ``context_size`` long: the BOS token followed by ``context_size - 1`` consecutive
    tokens of the concatenated split (files separated by EOS, which equals BOS for the stdlib
    tokenizer). ``max_tokens`` caps the total (``max_tokens // context_size`` rows): the first
    rows, or with ``spread`` rows evenly spaced over the whole split, so that a small held-out
    set samples every part of the stdlib rather than its first file or two. The rows stay in
    memory (a whole split's token stream is also kept on disk: :func:`token_cache_dir`). Use it as
    ``LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=ds)`` with
    ``cfg.context_size == context_size``.
    """
    split = _check_split(split)
    if max_tokens is not None and max_tokens < context_size:
        raise ValueError(f"max_tokens ({max_tokens}) must be >= context_size ({context_size})")
    n_rows = None if max_tokens is None else max_tokens // context_size
    need = None if n_rows is None or spread else n_rows * (context_size - 1)
    stream = split_token_stream(tokenizer, split, min_tokens=need)
    rows = chunk_stream(stream, context_size, special_token_id(tokenizer, "bos_token_id"))
    if n_rows is not None and spread and n_rows < len(rows):
        rows = rows[np.arange(n_rows) * len(rows) // n_rows]
    return rows_dataset(rows[:n_rows])


def unigram_cross_entropy(
    train_tokens: Int[np.ndarray, "..."], eval_tokens: Int[np.ndarray, "..."], vocab_size: int
) -> float:
    """Cross-entropy (nats/token) of ``eval_tokens`` under add-one-smoothed unigram frequencies
    of ``train_tokens``: the loss of a model that ignores context."""
    counts = np.bincount(np.asarray(train_tokens).ravel(), minlength=vocab_size).astype(np.float64)
    log_p = np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)
    return float(-log_p[np.asarray(eval_tokens).ravel()].mean())
