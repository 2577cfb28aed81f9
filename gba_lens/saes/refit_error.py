"""Which error the decoder refit minimises (``refit_error``): each row's squared error, or its share of the row.

The refit (:mod:`gba_lens.saes.decoder_refit`, :mod:`gba_lens.saes.threshold_reallocation`) chooses the
decoder, the firing offsets and the thresholds that lower the rows' summed squared error. Where the model
reads the activation through a LayerNorm, as every block reads the residual stream, what it sees of a
row's error is the error over the row's norm: a token of small norm loses as much to an error a tenth
the size as a large token does. ``relative`` weighs each row's squared error by one over its squared norm
(in the SAE's units, the input as the encoder reads it), so that the refit lowers the errors the model
reads:

    minimise  sum_i |e_i|^2 / max(|s x_i|^2, TINY)        (``absolute``: sum_i |e_i|^2)

Unset (the default) it is ``relative`` on a residual-stream hook (``hook_resid_pre``, ``_mid``, ``_post``,
or a bridge's ``blocks.L.hook_in`` ...: the SAE's ``cfg.metadata.hook_name``, which SAELens's runners set
before training; :mod:`gba_lens.saes.hook_defaults`) and ``absolute`` anywhere else: a component's output
(``hook_mlp_out``, ``hook_attn_out``) is added to a residual stream whose norm its rows do not show, and
synthetic or stored activations may name no hook.

Measured (docs/experiments/prior_free.md, forty-sixth step; six seeds of the stdlib LM's preset):
``relative`` raises resid_pre's CE loss recovered by 0.0002 on every seed, onto TopK's frontier on
average, and lowers its explained variance by 0.0003 (still above TopK's and BatchTopK's frontiers); on
resid_post (two seeds) CE loss recovered rises by 0.0006 and 0.0017 for 0.0003-0.0004 of EV; on mlp_out
(three seeds) it lowers explained variance by 0.0004-0.0008 and moves CE loss recovered both ways
(-0.0010 ... +0.0003).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float

from gba_lens.saes.hook_defaults import reads_through_layernorm

REFIT_ERRORS = ("absolute", "relative")
TINY = 1e-6
"""Squared norms (in the SAE's units, where the inputs' mean norm is about 1) below this weigh as this:
an all-zero row counts a million times an average one, not infinitely."""


def resolved_refit_error(sae: Any) -> str:
    """``sae``'s ``refit_error``, resolved from its hook where unset (see the module)."""
    choice = getattr(sae.cfg, "refit_error", None)
    if choice is not None:
        return choice
    return "relative" if reads_through_layernorm(sae.cfg) else "absolute"


@torch.no_grad()
def row_weights(scaled: Float[torch.Tensor, "rows d_in"], error: str) -> Float[torch.Tensor, " rows"] | None:
    """Each row's weight in the refit's error (``error``: ``absolute`` or ``relative``, resolved), from the
    rows as the encoder reads them (``sae._scaled(rows)``): None for ``absolute`` (every row 1), one over the
    row's squared norm for ``relative``."""
    if error == "absolute":
        return None
    return scaled.float().pow(2).sum(-1).clamp(min=TINY).reciprocal()
