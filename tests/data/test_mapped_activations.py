"""Memory-mapped activation files: the rows ``load_activations`` gives, read per batch, so that a
process (one data-parallel rank) holds a batch of them and never the dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from gba_lens.data.activations import (activations_hook, all_finite, first_non_finite_row, load_activations,
                                      map_activations, save_activations)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_mapped_rows_are_the_loaded_rows_in_the_files_dtype(tmp_path, dtype):
    acts = torch.randn(3, 50, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    path = tmp_path / "a.safetensors"
    save_file({"other": torch.zeros(2, 2), "blocks.0.hook_resid_pre": acts}, str(path), metadata={"x": "1"})
    mapped = map_activations(path, "blocks.0.hook_resid_pre")
    assert mapped.dtype == dtype and mapped.shape == (150, 8)
    assert torch.equal(mapped.float(), load_activations(path, "blocks.0.hook_resid_pre"))
    rows = torch.tensor([149, 3, 77])
    assert torch.equal(mapped[rows], acts.reshape(-1, 8)[rows])
    mapped[0] += 1  # copy-on-write: the file is never changed
    assert torch.equal(map_activations(path, "blocks.0.hook_resid_pre")[0], acts.reshape(-1, 8)[0])


def test_mapping_refuses_what_loading_refuses_with_one_line(tmp_path):
    path = tmp_path / "two.safetensors"
    save_file({"a": torch.zeros(4, 2), "b": torch.zeros(4, 2)}, str(path))
    with pytest.raises(ValueError, match=r"holds \['a', 'b'\]; pass hook_name"):
        map_activations(path)
    save_file({"activations": torch.zeros(5)}, str(tmp_path / "flat.safetensors"))
    with pytest.raises(ValueError, match="must be \\[n, d_in\\]"):
        map_activations(tmp_path / "flat.safetensors")
    save_activations(tmp_path / "ok.safetensors", torch.ones(100, 4))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-40])
    with pytest.raises(ValueError, match="byte range does not match its shape"):
        map_activations(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        map_activations(tmp_path / "junk.safetensors")
    save_file({"activations": torch.zeros(3, 2, dtype=torch.int32)}, str(tmp_path / "int.safetensors"))
    with pytest.raises(ValueError, match="dtype I32"):
        map_activations(tmp_path / "int.safetensors")


@pytest.mark.parametrize("value, finite", [(1.0, True), (float("nan"), False), (float("inf"), False),
                                           (-float("inf"), False), (3e38, True)])
def test_all_finite_answers_for_every_value(value, finite):
    x = torch.rand(64, 8)
    x[17, 3] = value
    x[40, 5] = value if value != 1.0 else 2.0  # 3e38 twice: the sum overflows, the values do not
    assert all_finite(x) is finite
    x[40, 5] = -x[17, 3]  # inf and -inf: a NaN sum
    assert all_finite(x) is finite
    assert all_finite(x.to(torch.bfloat16)) is finite


def test_a_finite_float16_batch_is_read_in_one_reduction(monkeypatch):
    checked = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: checked.append(t.numel()) or isfinite(t))
    assert all_finite(torch.full((1024, 128), 100.0, dtype=torch.float16))  # sums to 1.3e7, over float16's 65,504
    assert checked == [1]  # the sum alone, not a boolean per value


def test_non_finite_values_are_found_a_chunk_at_a_time():
    acts = torch.zeros(1000, 3)
    assert first_non_finite_row(acts, chunk_rows=64) is None
    acts[700, 1], acts[900, 0], acts[901, 2] = float("nan"), float("inf"), float("-inf")
    assert first_non_finite_row(acts, chunk_rows=64) == (700, 3)


def test_a_process_reading_batches_holds_a_batch_not_the_file(tmp_path):
    """Anonymous memory (not file pages, which the OS shares and reclaims) grows by far less than
    the 256 MiB file (loading it would add all of it) while batches of 1024 rows are drawn from all
    over it."""
    path = tmp_path / "big.safetensors"
    save_activations(path, torch.randn(131072, 1024).half())  # float16: loading would also convert it
    child = textwrap.dedent(f"""
        import json, torch
        from gba_lens.data.activations import first_non_finite_row, map_activations
        from gba_lens.data.batches import TensorBatches
        def anon_kib():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        before = anon_kib()
        acts = map_activations({str(path)!r})
        assert first_non_finite_row(acts) is None
        batches = TensorBatches(acts, 1024, seed=0)
        total = sum(float(next(batches).float().sum()) for _ in range(128))  # one epoch: every row read
        print(json.dumps({{"growth_kib": anon_kib() - before, "rows": acts.shape[0], "dtype": str(acts.dtype)}}))
    """)
    # A fixed mmap threshold: freed buffers go back to the system, so RssAnon counts live memory,
    # not what the allocator keeps for reuse.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == 131072 and result["dtype"] == "torch.float16"
    assert result["growth_kib"] < 96 * 1024, result  # 256 MiB file (load_activations: +512 MiB); a batch is 2 MiB


def test_a_saelens_cache_directory_is_mapped_chunk_by_chunk(tmp_path):
    """Arrow chunks (one per cache shard) viewed without a copy and indexed as one tensor."""
    from datasets import Array2D, Dataset, Features

    from gba_lens.data.activations import ChunkedRows
    from gba_lens.data.batches import TensorBatches

    hook = "blocks.0.hook_resid_pre"
    values = torch.randn(30, 4, 6, generator=torch.Generator().manual_seed(0))
    features = Features({hook: Array2D(shape=(4, 6), dtype="float32")})
    Dataset.from_dict({hook: values.numpy()}, features=features).save_to_disk(str(tmp_path / "cache"), num_shards=3)
    mapped = map_activations(tmp_path / "cache")
    assert isinstance(mapped, ChunkedRows) and len(mapped.blocks) == 3
    loaded = load_activations(tmp_path / "cache")
    assert mapped.shape == loaded.shape == (120, 6) and mapped.dtype == torch.float32
    assert torch.equal(mapped[0:120], loaded) and torch.equal(mapped[7], loaded[7])
    rows = torch.tensor([119, 0, 41, 40, 39, 80])
    assert torch.equal(mapped[rows], loaded[rows])
    with pytest.raises(IndexError, match="out of range"):
        mapped[torch.tensor([120])]
    a, b = TensorBatches(mapped, 16, seed=3), TensorBatches(loaded, 16, seed=3)
    for _ in range(10):  # more than one epoch
        assert torch.equal(next(a), next(b))
    assert first_non_finite_row(mapped, chunk_rows=7) is None
    assert activations_hook(tmp_path / "cache") == hook  # the cache's only column


def test_the_hook_of_a_file_is_read_where_the_file_says_it(tmp_path):
    rows = torch.zeros(4, 3)
    save_activations(tmp_path / "meta.safetensors", rows, hook_name="blocks.2.hook_resid_post")
    save_file({"blocks.1.hook_mlp_out": rows}, str(tmp_path / "named.safetensors"))
    save_activations(tmp_path / "plain.safetensors", rows)
    save_file({"first": rows, "second": rows.clone()}, str(tmp_path / "two.safetensors"))
    assert activations_hook(tmp_path / "meta.safetensors") == "blocks.2.hook_resid_post"  # its metadata
    assert activations_hook(tmp_path / "named.safetensors") == "blocks.1.hook_mlp_out"  # its tensor's name
    assert activations_hook(tmp_path / "plain.safetensors") is None  # nothing says
    assert activations_hook(tmp_path / "plain.safetensors", "blocks.0.hook_resid_pre") == "blocks.0.hook_resid_pre"
    assert activations_hook(tmp_path / "two.safetensors", "first") == "first"  # the one asked for
    with pytest.raises(ValueError, match=r"holds \['first', 'second'\]; pass hook_name"):
        activations_hook(tmp_path / "two.safetensors")
