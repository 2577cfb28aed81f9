"""The stdlib corpus and token data: a deterministic train/val split without tests, BOS-prefixed
rows that continue one token stream, the unigram baseline; and the old import paths."""

from __future__ import annotations

import numpy as np
import pytest

from gba_lens.data import stdlib_corpus as C
from gba_lens.data.tokens import tokenize_corpus


def test_corpus_split_is_deterministic_and_excludes_tests():
    train, val = C.stdlib_files("train"), C.stdlib_files("val")
    assert len(train) > 300 and 10 < len(val) < len(train) / 5
    assert train == sorted(train, key=lambda p: p.relative_to(C.stdlib_root()).as_posix())
    assert not set(train) & set(val)
    rels = [p.relative_to(C.stdlib_root()) for p in train + val]
    assert not any("test" in r.parts[:-1] or "tests" in r.parts[:-1] for r in rels)
    assert not any(r.name.startswith("test_") for r in rels)
    assert C.stdlib_files("val") == val
    with pytest.raises(ValueError, match="split"):
        C.stdlib_files("test")  # type: ignore[arg-type]


def test_token_dataset_shapes_and_bos(tokenizer, val_rows):
    assert val_rows.shape == (16, 128)  # the val_rows fixture: 16 rows of 128 tokens
    assert (val_rows[:, 0] == tokenizer.bos_token_id).all()
    assert val_rows.max() < len(tokenizer) and val_rows.min() >= 0
    # consecutive rows continue the same token stream
    stream = tokenize_corpus(tokenizer, C.stdlib_corpus("val")[:3])
    assert val_rows[0, 1:].tolist() == stream[:127].tolist()
    assert val_rows[1, 1:].tolist() == stream[127:254].tolist()
    ds = C.stdlib_token_dataset(tokenizer, context_size=32, split="val", max_tokens=320)
    assert ds.column_names == ["tokens"] and len(ds) == 10 and len(ds[0]["tokens"]) == 32


def test_spread_rows_are_evenly_spaced_over_the_whole_split(tokenizer):
    every = C.stdlib_token_dataset(tokenizer, context_size=32, split="val")
    spread = C.stdlib_token_dataset(tokenizer, context_size=32, split="val", max_tokens=4 * 32, spread=True)
    n = len(every)
    assert len(spread) == 4 and n > 100
    assert spread[:]["tokens"] == [every[i * n // 4]["tokens"] for i in range(4)]
    # asked for more rows than the split has: all of them, as without spread
    assert len(C.stdlib_token_dataset(tokenizer, context_size=32, split="val", max_tokens=10 * n * 32,
                                      spread=True)) == n


def test_unigram_cross_entropy_matches_uniform_case():
    vocab = 8
    train = np.arange(vocab).repeat(10)
    assert C.unigram_cross_entropy(train, np.array([0, 3, 7]), vocab) == pytest.approx(np.log(8))


def test_old_import_paths_still_work():
    from gba_lens.data import activations, batches, tokens
    from gba_lens.models import stdlib_lm
    from gba_lens.training import data as training_data
    from gba_lens.training.lm import sources

    assert stdlib_lm.stdlib_token_dataset is C.stdlib_token_dataset
    assert stdlib_lm.chunk_stream is tokens.chunk_stream and stdlib_lm.tokenize_corpus is tokenize_corpus
    assert training_data.TensorBatches is batches.TensorBatches
    assert training_data.load_activations is activations.load_activations
    assert sources.rows_dataset is tokens.rows_dataset


def _fake_stdlib(root, n_files: int = 40):
    """A standard library of ``n_files`` small modules (both splits have some: the split is by path hash)."""
    for i in range(n_files):
        (root / f"mod_{i}.py").write_text(f"def f_{i}(x):\n    return x * {i} + {i * i}\n")
    return root


@pytest.fixture
def fake_stdlib(tmp_path, monkeypatch):
    """The corpus read from a small fake standard library, its token cache under ``tmp_path/cache``, and
    the in-memory cache empty: what a new process sees."""
    (tmp_path / "lib").mkdir()
    root = _fake_stdlib(tmp_path / "lib")
    monkeypatch.setattr(C, "stdlib_root", lambda: root)
    monkeypatch.setattr(C, "_STREAM_CACHE", {})
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "cache"))
    return root


def _new_process(monkeypatch, calls: list):
    """The in-memory cache emptied, and every tokenisation counted."""
    monkeypatch.setattr(C, "_STREAM_CACHE", {})

    def counted(tokenizer, texts):
        calls.append(len(texts))
        return tokenize_corpus(tokenizer, texts)

    monkeypatch.setattr(C, "tokenize_corpus", counted)


def test_a_whole_split_is_tokenised_once_and_read_back_from_disk_by_the_next_process(tokenizer, fake_stdlib,
                                                                                     tmp_path, monkeypatch):
    expected = tokenize_corpus(tokenizer, C.stdlib_corpus("train"))
    calls = []
    _new_process(monkeypatch, calls)
    first = C.split_token_stream(tokenizer, "train")
    assert calls == [len(C.stdlib_files("train"))] and np.array_equal(first, expected)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]  # no partial file left
    _new_process(monkeypatch, calls := [])
    again = C.split_token_stream(tokenizer, "train")
    assert calls == [] and np.array_equal(again, expected)
    # a short read takes the cached split's first rows: the rows the first files alone would give
    _new_process(monkeypatch, calls := [])
    rows = C.stdlib_token_dataset(tokenizer, 16, "train", max_tokens=64)["tokens"]
    _new_process(monkeypatch, [])
    monkeypatch.setenv(C.CACHE_ENV, "off")
    assert calls == [] and rows == C.stdlib_token_dataset(tokenizer, 16, "train", max_tokens=64)["tokens"]


def test_a_changed_library_or_a_damaged_cache_file_is_tokenised_again(tokenizer, fake_stdlib, tmp_path, monkeypatch):
    C.split_token_stream(tokenizer, "train")
    (cached,) = (tmp_path / "cache").iterdir()
    module = C.stdlib_files("train")[0]
    module.write_text(module.read_text() + "y = 1\n")  # an interpreter upgraded in place
    _new_process(monkeypatch, calls := [])
    changed = C.split_token_stream(tokenizer, "train")
    assert calls and np.array_equal(changed, tokenize_corpus(tokenizer, C.stdlib_corpus("train")))
    assert len(list((tmp_path / "cache").iterdir())) == 2
    (current,) = set((tmp_path / "cache").iterdir()) - {cached}
    whole = current.read_bytes()
    for damage in (b"not an array", b"", whole[: len(whole) // 2], None):  # b"": empty; then cut short
        if damage is None:  # a whole .npy file of the wrong kind
            np.save(current, np.zeros(3, dtype=np.float32))
        else:
            current.write_bytes(damage)
        _new_process(monkeypatch, calls := [])
        assert np.array_equal(C.split_token_stream(tokenizer, "train"), changed) and calls
        assert np.array_equal(np.load(current, allow_pickle=False), changed)  # written again, whole


def test_off_or_an_unwritable_cache_directory_keeps_the_split_in_memory_only(tokenizer, fake_stdlib, tmp_path,
                                                                             monkeypatch):
    expected = tokenize_corpus(tokenizer, C.stdlib_corpus("val"))
    monkeypatch.setenv(C.CACHE_ENV, "off")
    assert C.token_cache_dir() is None
    assert np.array_equal(C.split_token_stream(tokenizer, "val"), expected)
    assert not (tmp_path / "cache").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(C.CACHE_ENV, str(blocker / "cache"))  # under a file: cannot be made
    _new_process(monkeypatch, [])
    assert np.array_equal(C.split_token_stream(tokenizer, "val"), expected)
    assert {p.name for p in tmp_path.iterdir()} == {"lib", "a_file"}  # nothing written, no partial file


def test_the_cache_directory_is_the_variable_s_else_xdg_s_else_the_home_s(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.token_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(C.CACHE_ENV)
    assert C.token_cache_dir() == tmp_path / "xdg" / "gba_lens"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(C.Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert C.token_cache_dir() == tmp_path / "home" / ".cache" / "gba_lens"

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(C.Path, "home", classmethod(no_home))
    assert C.token_cache_dir() is None  # memory only, the run goes on
