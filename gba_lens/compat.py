"""The SAELens and TransformerLens names gba_lens uses that are not those libraries' public API.

A name is "public" here when the library exports it at the top level (``sae_lens.__all__``,
``transformer_lens.__all__``) or from a sub-package with its own ``__all__``
(``sae_lens.synthetic``, ``transformer_lens.model_bridge``): import those from the library as
usual. Everything else gba_lens needs - private modules, underscore names, constants, internal
classes, and private methods it overrides or calls - is listed in this one module, so that a
SAELens / TransformerLens upgrade that removes one fails ``tests/test_compat.py`` with the exact
name, instead of failing somewhere deep in training.

Import the names from here (``from gba_lens.compat import PrefetchingIterator``). This module
sits at the bottom of the package: it imports only the two libraries (both already loaded by
``import sae_lens``), so any layer may import it.

Checked against SAELens 6.54 and TransformerLens 3.9.
"""

from __future__ import annotations

from typing import NamedTuple

# -- SAELens: SAE internals ----------------------------------------------------------------------
# saes/gba.py: GBATrainingSAE overrides ``get_coefficients`` (returns TrainCoefficientConfig) and
# ``training_forward_pass`` (TrainStepInput -> TrainStepOutput) of SAELens's TrainingSAE.
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput, TrainStepOutput

# benchmarks/, tests/: an SAE config's ``metadata`` (its hook name), for SAEs built by hand; saes/gba.py:
# the metadata ``SAE.load_from_disk`` passes to GBATrainingSAEConfig as a dict.
from sae_lens.saes.sae import SAEMetadata

# saes/gba_loading.py: ``register()`` is idempotent - it registers the "gba" architecture only where it
# is not in these registries yet (register_sae_class and register_sae_training_class are public).
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

# -- SAELens: configs and file names ------------------------------------------------------------
# training/train.py: the config SAETrainer takes (gba_lens builds it for in-memory training,
# without a LanguageModelSAERunnerConfig).
from sae_lens.config import SAETrainerConfig

# training/trainer.py, training/lm/report.py: file names SAELens writes next to a saved SAE or
# checkpoint, so gba_lens's checkpoints and result folders use the same names.
from sae_lens.constants import ACTIVATION_SCALER_CFG_FILENAME, RUNNER_CFG_FILENAME, SPARSITY_FILENAME

# training/lm/evaluate.py: the options of sae_lens.run_evals (run_evals itself is public).
from sae_lens.evals import EvalConfig

# -- SAELens: training internals ----------------------------------------------------------------
# experiments/runner.py: the module whose ``tqdm`` a worker process replaces with a disabled
# one (SAETrainer.fit always draws its own bar and has no switch for it).
from sae_lens.training import sae_trainer as sae_trainer_module

# training/lm/runner.py: the same for SAELens's multi-SAE coordinator, whose bar only rank 0 draws
# in a data-parallel run.
from sae_lens.training import multi_sae_trainer as multi_sae_trainer_module

# training/trainer.py: SAELens's SIGINT/SIGTERM handler and the exception it raises, so an
# interrupted LM run writes a resumable checkpoint.
from sae_lens.training._interruption import InterruptedException, interrupt_callback

# training/lm/evaluate.py: the activation normalisation a trained runner applies, re-applied when
# evaluating on held-out tokens.
from sae_lens.training.activation_scaler import ActivationScaler

# training/lm/runner.py: the coordinator SAELens uses to train several SAEs on one model pass;
# gba_lens subclasses it to use GBATrainer per SAE.
from sae_lens.training.multi_sae_trainer import MultiSAETrainer

# training/lm/runner.py: the background prefetcher SAELens's runners wrap the activation store in
# (the overridden ``run`` methods build it the same way).
from sae_lens.training.prefetch import PrefetchingIterator

# training/lm/runner.py: builds the ActivationsStore of OfflineCacheActivationsRunner, which takes
# an already-loaded model instead of loading one by name.
from sae_lens.cache_activations_runner import _mk_activations_store

# training/lm/sources.py: SAELens's model loader (the same load the runner would do by name).
from sae_lens.load_model import load_model

# training/lm/evaluate.py: the special tokens (BOS/EOS/PAD) SAELens excludes from training
# activations.
from sae_lens.util import get_special_token_ids

# -- TransformerLens ------------------------------------------------------------------------------
# adapters/ (attachment.py, hooks.py, registry.py, splice.py), circuits/: the hook point type and
# the handle HookPoint.add_hook returns (transformer_lens.hook_points has no __all__).
from transformer_lens.hook_points import HookPoint, LensHandle

# models/stdlib_lm.py: converts the bundled GPT-2-style Hugging Face weights to a HookedTransformer
# state dict without a download.
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

#: Every name above and the module it comes from (``tests/test_compat.py`` imports each one).
IMPORTED_NAMES: dict[str, str] = {
    "TrainCoefficientConfig": "sae_lens.saes.sae",
    "TrainStepInput": "sae_lens.saes.sae",
    "TrainStepOutput": "sae_lens.saes.sae",
    "SAEMetadata": "sae_lens.saes.sae",
    "SAE_CLASS_REGISTRY": "sae_lens.registry",
    "SAE_TRAINING_CLASS_REGISTRY": "sae_lens.registry",
    "SAETrainerConfig": "sae_lens.config",
    "ACTIVATION_SCALER_CFG_FILENAME": "sae_lens.constants",
    "RUNNER_CFG_FILENAME": "sae_lens.constants",
    "SPARSITY_FILENAME": "sae_lens.constants",
    "EvalConfig": "sae_lens.evals",
    "InterruptedException": "sae_lens.training._interruption",
    "interrupt_callback": "sae_lens.training._interruption",
    "ActivationScaler": "sae_lens.training.activation_scaler",
    "MultiSAETrainer": "sae_lens.training.multi_sae_trainer",
    "PrefetchingIterator": "sae_lens.training.prefetch",
    "_mk_activations_store": "sae_lens.cache_activations_runner",
    "load_model": "sae_lens.load_model",
    "get_special_token_ids": "sae_lens.util",
    "HookPoint": "transformer_lens.hook_points",
    "LensHandle": "transformer_lens.hook_points",
    "convert_gpt2_weights": "transformer_lens.pretrained.weight_conversions",
}

class PrivateMember(NamedTuple):
    """A private member of a library class (or module) that gba_lens overrides or calls."""

    module: str
    owner: str  # class name in ``module``; "" for a module attribute
    member: str
    why: str


_TRAINER = "sae_lens.training.sae_trainer"
_MULTI = "sae_lens.training.multi_sae_trainer"
_GUARD = "overridden: W&B failures never stop training (training/trainer.py)"
_PERIODIC = "overridden: periodic resumable checkpoints (training/trainer.py)"
_RUN = "called by the overridden run() (training/lm/runner.py)"

#: Checked too: an override of a method the library renamed would silently never run.
PRIVATE_MEMBERS: tuple[PrivateMember, ...] = (
    PrivateMember(_TRAINER, "", "tqdm", "replaced in worker processes (experiments/runner.py)"),
    PrivateMember(_TRAINER, "SAETrainer", "_log_train_step", _GUARD),
    PrivateMember(_TRAINER, "SAETrainer", "_run_and_log_evals", _GUARD),
    PrivateMember(_TRAINER, "SAETrainer", "_checkpoint_if_needed", _PERIODIC),
    PrivateMember(_TRAINER, "SAETrainer", "_reset_running_sparsity_stats",
                  "called from GBATrainer.maybe_reset_sparsity (training/trainer.py)"),
    PrivateMember(_MULTI, "MultiSAETrainer", "_log_train_step", _GUARD),
    PrivateMember(_MULTI, "MultiSAETrainer", "_run_and_log_evals", _GUARD),
    PrivateMember(_MULTI, "MultiSAETrainer", "_checkpoint_if_needed", _PERIODIC),
    PrivateMember("sae_lens", "LanguageModelSAETrainingRunner", "_set_sae_metadata", _RUN),
    PrivateMember("sae_lens", "LanguageModelSAETrainingRunner", "_compile_sae_if_needed", _RUN),
    PrivateMember("sae_lens", "MultiSAETrainingRunner", "_set_sae_metadata", _RUN),
    PrivateMember("sae_lens", "MultiSAETrainingRunner", "_save_runner_checkpoint_files",
                  "the trainer's save_checkpoint_fn (training/lm/runner.py)"),
    PrivateMember("sae_lens", "CacheActivationsRunner", "_get_sliced_context_size",
                  "called by OfflineCacheActivationsRunner.__init__ (training/lm/runner.py)"),
    PrivateMember("transformer_lens.model_bridge", "TransformerBridge", "_hook_registry",
                  "attach() registers SAE hook points in it (adapters/registry.py)"),
)

__all__ = [*IMPORTED_NAMES, "sae_trainer_module", "multi_sae_trainer_module", "IMPORTED_NAMES", "PRIVATE_MEMBERS",
           "PrivateMember"]
