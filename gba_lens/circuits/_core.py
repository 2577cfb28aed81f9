"""Deprecated: the former grab bag of the circuit utilities, kept for one release.

Its names now live in modules named for their concern; import them from there:

* :mod:`gba_lens.circuits.types` - ``Metric``, ``TokensLike``, ``PositionsLike``, ``FeaturesLike``,
  ``ModelOrAttachment``, ``HookFn`` (also exported by :mod:`gba_lens.circuits`);
* :mod:`gba_lens.circuits.inputs` - ``attached``, ``hook_key``, ``d_sae_of``,
  ``normalize_features``, ``position_mask``, ``to_tokens``, ``check_same_shape``,
  ``warn_if_no_error_term``;
* :mod:`gba_lens.circuits.forward` - ``temporary_hooks``, ``capture``, ``logits_of``,
  ``scalar_metric``;
* :mod:`gba_lens.circuits.replicated` - ``NodeEdit``, ``run_replicated``,
  ``replicates_per_pass``, ``DEFAULT_MAX_TOKENS``;
* :mod:`gba_lens.circuits.chunking` - ``chunks``, ``n_chunks``, ``progress_chunks``;
* :mod:`gba_lens.circuits.statistics` - ``rank``, ``pearson``, ``spearman``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from gba_lens.circuits.chunking import chunks, n_chunks, progress_chunks
from gba_lens.circuits.forward import capture, logits_of, scalar_metric, temporary_hooks
from gba_lens.circuits.inputs import (
    _single_hook,
    attached,
    check_same_shape,
    d_sae_of,
    hook_key,
    normalize_features,
    position_mask,
    to_tokens,
    warn_if_no_error_term,
)
from gba_lens.circuits.replicated import DEFAULT_MAX_TOKENS, NodeEdit, replicates_per_pass, run_replicated
from gba_lens.circuits.statistics import pearson, rank, spearman
from gba_lens.circuits.types import FeaturesLike, HookFn, Metric, ModelOrAttachment, PositionsLike, TokensLike

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "FeaturesLike",
    "HookFn",
    "Metric",
    "ModelOrAttachment",
    "NodeEdit",
    "PositionsLike",
    "TokensLike",
    "_single_hook",
    "as_float_tensor",
    "attached",
    "capture",
    "check_same_shape",
    "chunks",
    "d_sae_of",
    "hook_key",
    "logits_of",
    "n_chunks",
    "normalize_features",
    "pearson",
    "position_mask",
    "progress_chunks",
    "rank",
    "replicates_per_pass",
    "run_replicated",
    "scalar_metric",
    "spearman",
    "temporary_hooks",
    "to_tokens",
    "warn_if_no_error_term",
]


def as_float_tensor(x: Float[torch.Tensor, "..."] | float) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(float(x))
