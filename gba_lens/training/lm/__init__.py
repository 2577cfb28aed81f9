"""Train GBA SAEs on a language model's hook points: ``gba-lens train`` / :func:`train_gba_on_model`.

    from gba_lens.training.lm import LMTrainConfig, train_gba_on_model

    results = train_gba_on_model(LMTrainConfig(model="gpt2", hook=["blocks.6.hook_resid_pre"],
                                               width=[24576], training_tokens=50_000_000,
                                               device="cuda", wandb_project="gba"))
    results.saes["blocks.6.hook_resid_pre"]          # a plain sae_lens SAE (JumpReLU), loaded back
    results.evals["blocks.6.hook_resid_pre"].metrics  # CE loss recovered, KL, EV, L0, dead, ...

With no ``model`` the offline stdlib LM is used, with no ``dataset`` the stdlib corpus, so
``train_gba_on_model(LMTrainConfig(training_tokens=100_000))`` runs anywhere without a network.

The modules, in the order a run uses them:

- :mod:`~gba_lens.training.lm.config`: the options (:class:`LMTrainConfig`, :class:`LMCacheConfig`);
- :mod:`~gba_lens.training.lm.sources`: the model, hook names and tokens (training and held out);
- :mod:`~gba_lens.training.lm.cache`: activations cached once with SAELens's
  ``CacheActivationsRunner`` (``cache_dir``), so several SAEs train without running the model;
- :mod:`~gba_lens.training.lm.runner_config` and :mod:`~gba_lens.training.lm.runner`: SAELens's
  ``LanguageModelSAETrainingRunner`` (one SAE) or ``MultiSAETrainingRunner`` (several hooks and/or
  widths from one model pass), with gba_lens's ``GBATrainer`` in place of SAELens's trainer;
- :mod:`~gba_lens.training.lm.evaluate`: each saved SAE, loaded back with
  ``SAE.load_from_disk``, evaluated on held-out tokens with ``sae_lens.evals.run_evals``;
- :mod:`~gba_lens.training.lm.report`: results type, ``results.json`` / ``results.md``, the
  output layout, the final evaluation in W&B;
- :mod:`~gba_lens.training.lm.pipeline`: :func:`train_gba_on_model`, which ties them together.
"""

from gba_lens.training.lm.cache import CACHE_INFO_FILENAME, cache_lm_activations
from gba_lens.training.lm.config import LMCacheConfig, LMSourceArgs, LMTrainConfig
from gba_lens.training.lm.evaluate import SAEEvalResult
from gba_lens.training.lm.pipeline import train_gba_on_model
from gba_lens.training.lm.report import PLOT_FILENAME, RESULTS_FILENAME, LMTrainResults
from gba_lens.training.lm.sources import held_out_tokens

__all__ = [
    "CACHE_INFO_FILENAME",
    "PLOT_FILENAME",
    "RESULTS_FILENAME",
    "LMCacheConfig",
    "LMSourceArgs",
    "LMTrainConfig",
    "LMTrainResults",
    "SAEEvalResult",
    "cache_lm_activations",
    "held_out_tokens",
    "train_gba_on_model",
]
