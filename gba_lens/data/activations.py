"""Cached activations on disk: a safetensors file or a SAELens activation cache, as ``[n, d_in]``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ["load_activations", "save_activations"]


def load_activations(path: str | Path, hook_name: str | None = None) -> Float[torch.Tensor, "n d_in"]:
    """Load cached activations as a [n, d_in] float tensor.

    Accepts a ``.safetensors`` file (one tensor, or the key ``activations`` / ``hook_name``) or a
    directory written by SAELens's ``CacheActivationsRunner`` (a Hugging Face dataset with one
    column per hook). The tensor must have at least 2 dimensions, the last being d_in; leading
    (token) dimensions are flattened. A 1-D tensor is refused. No pickle is ever loaded.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cached activations at {path}")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: cached activations must be a .safetensors file or a SAELens cache dir")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
        key = hook_name if hook_name in tensors else "activations" if "activations" in tensors else None
        if key is None:
            if len(tensors) != 1:
                raise ValueError(f"{path} holds {sorted(tensors)}; pass hook_name to choose one")
            key = next(iter(tensors))
        acts = tensors[key]
    else:
        import datasets

        if not (path / "dataset_info.json").exists() and not (path / "state.json").exists():
            raise ValueError(f"{path} is not a SAELens activation cache (no dataset_info.json)")
        ds = datasets.load_from_disk(str(path))
        columns = ds.column_names
        if hook_name is None:
            if len(columns) != 1:
                raise ValueError(f"{path} caches {columns}; pass hook_name to choose one")
            hook_name = columns[0]
        if hook_name not in columns:
            import difflib

            close = difflib.get_close_matches(hook_name, columns, n=3)
            raise KeyError(f"{path} has no activations for {hook_name!r}; close matches: {close}")
        acts = ds.with_format("torch")[:][hook_name]  # [:] first: datasets 5 returns a lazy Column
    if acts.ndim < 2:
        raise ValueError(
            f"{path}: activations have shape {tuple(acts.shape)}; they must be [n, d_in] "
            "(or [..., d_in], e.g. [batch, context, d_in], flattened to rows)"
        )
    if acts.shape[-1] == 0:
        raise ValueError(f"{path}: activations have shape {tuple(acts.shape)}: d_in is 0")
    acts = acts.float().reshape(-1, acts.shape[-1])
    if acts.shape[0] == 0:
        raise ValueError(f"{path}: no activations cached")
    return acts


def save_activations(path: str | Path, activations: Float[torch.Tensor, "n d_in"], **metadata: str) -> None:
    """Write activations as safetensors (the format ``load_activations`` reads)."""
    save_file(
        {"activations": activations.detach().cpu().contiguous()},
        str(path),
        metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in metadata.items()},
    )
