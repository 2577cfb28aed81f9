"""Hook-point adapters: splice SAELens SAEs into TransformerLens models.

``attach(model, {hook_name: sae, ...}, error_term=False) -> Attachment`` works on
``HookedTransformer``, ``HookedSAETransformer`` and ``TransformerBridge`` and on any
``sae_lens.SAE``. The SAE's feature activations, reconstruction, error, input and output become
hook points of the model (``f"{hook_name}.hook_sae_acts_post"``, ...), so ``run_with_cache`` and
``run_with_hooks`` see them. Inference code only: nothing here imports gba_lens training modules.
"""

from gba_lens.adapters.attachment import Attachment, attach
from gba_lens.adapters.hooks import (
    GATED_HOOKS,
    HOOK_SAE_ACTS_POST,
    HOOK_SAE_ACTS_PRE,
    HOOK_SAE_ERROR,
    HOOK_SAE_INPUT,
    HOOK_SAE_OUTPUT,
    HOOK_SAE_RECONS,
    SAE_HOOK_SUFFIXES,
    UnknownHookNameError,
)
from gba_lens.adapters.splice import SAESplice

__all__ = [
    "attach",
    "Attachment",
    "SAESplice",
    "UnknownHookNameError",
    "GATED_HOOKS",
    "SAE_HOOK_SUFFIXES",
    "HOOK_SAE_INPUT",
    "HOOK_SAE_ACTS_PRE",
    "HOOK_SAE_ACTS_POST",
    "HOOK_SAE_RECONS",
    "HOOK_SAE_ERROR",
    "HOOK_SAE_OUTPUT",
]
