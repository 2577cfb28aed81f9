"""Circuit utilities on SAE features: ablation, steering, attribution (with W&B logging).

Every utility takes the :class:`~gba_lens.adapters.Attachment` returned by
``gba_lens.attach(model, {hook: sae}, error_term=True)`` (or a model and ``saes=``), so all
experiments run on the same model and SAE objects:

* ablation - :func:`ablate_features`, :func:`ablation_sweep`, :func:`ablation_hooks`;
* steering - :class:`Steer`, :class:`Clamp`, :func:`steering`, :func:`run_with_steering`,
  :func:`generate_with_steering`, :func:`steering_sweep`;
* attribution - :func:`attribute` (attribution patching or integrated gradients over feature and
  error nodes), :func:`exact_patching`, :func:`verify_attribution`;
* metrics - :func:`logit_diff_metric`, :func:`token_logit_metric`, :func:`token_prob_metric`,
  :func:`kl_divergence`, built on one logit-difference core :func:`answer_logit_diff`; IOI
  metrics in :mod:`gba_lens.circuits.ioi` (prompt sets: :mod:`gba_lens.tasks.ioi`);
* logging - :class:`WandbLogger` (on :mod:`gba_lens.wandb_run`); plots in
  :mod:`gba_lens.circuits.plotting`;
* types - :data:`Metric`, :data:`TokensLike`, :data:`PositionsLike`, :data:`FeaturesLike`,
  :data:`ModelOrAttachment`, :data:`Node`, used in the signatures above.

Where things are: ``types`` (public aliases), ``inputs`` (coercion and validation of arguments),
``forward`` (hooked forward passes), ``replicated`` (R edited copies of a batch in one pass, the
engine of sweeps, exact patching and IG), ``chunking`` (batches of work with progress),
``statistics`` (rank correlations), ``attribution`` / ``attribution_result`` / ``patching``,
``ablation``, ``steering``, ``metrics``, ``ioi``, ``plotting`` (takes plain data),
``wandb_logging``.

This package is inference-side: it never imports gba_lens training code.
"""

from gba_lens.circuits.ablation import (
    AblationResult,
    ablate_features,
    ablation_hooks,
    ablation_sweep,
)
from gba_lens.circuits.attribution import attribute
from gba_lens.circuits.attribution_result import AttributionResult, nodes_of
from gba_lens.circuits.ioi import logit_diff, mean_logit_diff
from gba_lens.circuits.metrics import (
    answer_logit_diff,
    kl_divergence,
    logit_diff_metric,
    token_logit_metric,
    token_logprob_metric,
    token_prob_metric,
)
from gba_lens.circuits.patching import exact_patching, verify_attribution
from gba_lens.circuits.plotting import (
    plot_ablation_sweep,
    plot_attribution_heatmap,
    plot_feature_heatmap,
    plot_steering_sweep,
)
from gba_lens.circuits.steering import (
    Clamp,
    Steer,
    generate_with_steering,
    run_with_steering,
    steering,
    steering_direction,
    steering_sweep,
)
from gba_lens.circuits.types import (
    FeaturesLike,
    Metric,
    ModelOrAttachment,
    Node,
    PositionsLike,
    TokensLike,
)
from gba_lens.circuits.wandb_logging import WandbLogger
from gba_lens.tasks.ioi import IOIPromptSet, make_ioi_prompts

__all__ = [
    # ablation
    "AblationResult",
    "ablate_features",
    "ablation_sweep",
    "ablation_hooks",
    # steering
    "Steer",
    "Clamp",
    "steering",
    "steering_direction",
    "run_with_steering",
    "generate_with_steering",
    "steering_sweep",
    # attribution
    "AttributionResult",
    "attribute",
    "exact_patching",
    "verify_attribution",
    "nodes_of",
    # metrics
    "answer_logit_diff",
    "logit_diff_metric",
    "token_logit_metric",
    "token_prob_metric",
    "token_logprob_metric",
    "kl_divergence",
    # IOI
    "IOIPromptSet",
    "make_ioi_prompts",
    "logit_diff",
    "mean_logit_diff",
    # plots and logging
    "plot_steering_sweep",
    "plot_attribution_heatmap",
    "plot_ablation_sweep",
    "plot_feature_heatmap",
    "WandbLogger",
    # types
    "Metric",
    "TokensLike",
    "PositionsLike",
    "FeaturesLike",
    "ModelOrAttachment",
    "Node",
]
