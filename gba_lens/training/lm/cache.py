"""Activation caches for ``gba-lens cache`` / ``gba-lens train --cache-dir``, and which rows of
the data stay held out after a cache consumed some.

A cache is a plain SAELens activation cache (written by SAELens's ``CacheActivationsRunner``)
plus a ``gba_lens_cache.json`` describing where it came from, so SAELens's runners read it and
the evaluation knows which rows of local data it did not use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from sae_lens import CacheActivationsRunnerConfig
from torch import nn

from gba_lens.training.lm.config import LMCacheConfig
from gba_lens.training.lm.runner import OfflineCacheActivationsRunner, quiet_saelens, seed_everything
from gba_lens.training.lm.sources import (
    TokenSource,
    check_d_in,
    default_hook,
    load_model,
    load_tokens,
    validate_hooks,
    wrap_model,
)
from gba_lens.training.train import resolve_device

__all__ = ["CACHE_INFO_FILENAME", "after_cached_rows", "cache_lm_activations", "check_cache"]

CACHE_INFO_FILENAME = "gba_lens_cache.json"


def cache_lm_activations(cfg: LMCacheConfig, *, model: nn.Module | None = None) -> Path:
    """Cache one hook's activations with SAELens's ``CacheActivationsRunner``; returns the directory.

    The cache is a plain SAELens activation cache (a ``datasets`` directory with one column per
    hook plus ``token_ids``), with a ``gba_lens_cache.json`` describing where it came from.
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    loaded = wrap_model(model, cfg.model) if model is not None else load_model(cfg.model, cfg.model_kind, device)
    hook = cfg.hook or default_hook(loaded)
    d_in = validate_hooks(loaded.model, [hook])[hook]
    source = load_tokens(cfg.dataset, loaded, cfg.context_size, train_tokens=cfg.tokens + 4 * cfg.store_batch_prompts * 128, eval_tokens=1)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"cache directory {out} is not empty; remove it or choose another --out")
    ctx = source.context_size
    tokens_per_batch = cfg.store_batch_prompts * ctx
    n_tokens = max(tokens_per_batch, cfg.tokens // tokens_per_batch * tokens_per_batch)
    bytes_per_token = d_in * torch.empty((), dtype=getattr(torch, cfg.dtype)).element_size()
    # One shard per 2 GB (SAELens's limit); a smaller run gets one shard of exactly its size,
    # not a 2 GB buffer (SAELens sizes every buffer from buffer_size_gb).
    buffer_tokens = min(n_tokens, (2_000_000_000 // bytes_per_token) // tokens_per_batch * tokens_per_batch)
    cache_cfg = CacheActivationsRunnerConfig(
        dataset_path=source.dataset_path,
        model_name=loaded.model_name,
        model_class_name=loaded.model_class_name,
        model_batch_size=cfg.store_batch_prompts,
        hook_name=hook,
        d_in=d_in,
        training_tokens=n_tokens,
        context_size=ctx,
        new_cached_activations_path=str(out),
        # SAELens's shuffle only reorders the dataset object it returns (and leaves an index
        # file in the cache directory); the on-disk order stays. Training shuffles in its buffer.
        shuffle=False,
        seed=cfg.seed,
        dtype=cfg.dtype,
        device=device,
        buffer_size_gb=(buffer_tokens + 0.5) * bytes_per_token / 1e9,
        streaming=source.streaming,
        prepend_bos=True,
    )
    with quiet_saelens():
        runner = OfflineCacheActivationsRunner(cache_cfg, loaded.model, override_dataset=source.train)
        ds = runner.run()
    info = {
        "model_name": loaded.model_name,
        "model_class_name": loaded.model_class_name,
        "hook_name": hook,
        "d_in": d_in,
        "context_size": ctx,
        "dataset_path": source.dataset_path,
        "n_sequences": len(ds),
        "tokens": len(ds) * ctx,
        "dataset_rows_used": runner.activations_store.n_dataset_processed,
        "dtype": cfg.dtype,
    }
    (out / CACHE_INFO_FILENAME).write_text(json.dumps(info, indent=2))
    return out


def after_cached_rows(source: TokenSource, rows_used: int, eval_tokens: int) -> TokenSource:
    """Held-out rows of local data after the ``rows_used`` rows a cache consumed."""
    import datasets

    full = datasets.concatenate_datasets([source.train, source.eval])
    if rows_used >= len(full):
        raise ValueError(
            f"the activation cache used all {len(full)} rows of {source.dataset_path}: no held-out tokens "
            "remain for evaluation; cache fewer tokens"
        )
    n_eval = min(len(full) - rows_used, max(1, math.ceil(eval_tokens / source.context_size)))
    return TokenSource(source.dataset_path, source.context_size, source.train,
                       full.select(range(rows_used, rows_used + n_eval)), source.streaming)


def check_cache(cache_dir: Path, hook: str, d_in: int) -> dict[str, Any]:
    """Validate an existing cache against the model's hook; returns its description."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(cache_dir))
    except Exception as exc:  # noqa: BLE001 - any unreadable directory
        raise ValueError(f"{cache_dir} is not a SAELens activation cache: {exc}") from exc
    if hook not in ds.column_names:
        import difflib

        cols = [c for c in ds.column_names if c != "token_ids"]
        raise KeyError(
            f"cache {cache_dir} holds activations of {cols}, not of {hook!r}; "
            f"close matches: {difflib.get_close_matches(hook, cols, n=3)}"
        )
    ctx, found = ds.features[hook].shape
    check_d_in(hook, d_in, found, f"the activation cache {cache_dir}")
    info_file = cache_dir / CACHE_INFO_FILENAME
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    info.update({"context_size": ctx, "n_sequences": len(ds)})
    return info
