"""The options of ``gba-lens train`` and ``gba-lens cache`` (each field is a command-line option;
its docstring is the ``--help`` text).

The names and defaults that :class:`~gba_lens.training.train.TrainConfig` shares mean the same
there: ``lr``, ``lr_warm_up_steps``, ``lr_decay_steps``, ``device`` (``auto``),
``checkpoint_every``, ``log_every``, and the resume / W&B options of
:class:`~gba_lens.training.run_options.RunOptions` (inherited by both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gba_lens.training.run_options import RunOptions

from gba_lens.saes.gba import GBAOptions

__all__ = ["LMCacheConfig", "LMSourceArgs", "LMTrainConfig"]


@dataclass
class LMSourceArgs:
    """Model, data and device (shared by ``gba-lens train`` and ``gba-lens cache``)."""

    model: str | None = None
    """TransformerLens model name (e.g. gpt2; downloaded as usual) or a local Hugging Face save_pretrained directory (loaded as a TransformerBridge). Default: the offline stdlib LM shipped with gba_lens."""
    model_kind: Literal["auto", "hooked", "bridge"] = "auto"
    """Model class: auto (HookedTransformer for names and the stdlib LM, TransformerBridge for directories), hooked or bridge."""
    dataset: str | None = None
    """Hugging Face dataset name (streamed), or local data: text file / directory of text files / glob, .jsonl/.parquet/.csv (text or tokens column), a .safetensors of token ids, or a datasets save_to_disk directory. Default: the Python stdlib corpus, tokenised by the model's tokenizer."""
    context_size: int | None = None
    """Tokens per sequence (default: the dataset's row length for tokenised data, else min(n_ctx, 128))."""
    store_batch_prompts: int = 16
    """Sequences per model forward pass when collecting activations."""
    device: str = "auto"
    """Torch device (auto: cuda if available, else cpu)."""
    dtype: str = "float32"
    """Activation and SAE dtype."""
    seed: int = 42
    """Seed for SAE initialisation and activation shuffling."""


@dataclass
class LMTrainConfig(LMSourceArgs, GBAOptions, RunOptions):
    """Train GBA SAEs on a language model's hook points (SAELens runners + GBA trainer), then evaluate them on held-out tokens.

    Resuming (the same rule as ``TrainConfig``, see :mod:`gba_lens.training.run_settings`):
    ``OUT/checkpoints/run_settings.json`` records the settings that define the run; with ``resume``
    (the default) a directory holding checkpoints of the same settings continues from the newest
    intact one, exactly (the data already trained on is replayed), one of other settings is
    refused (listing the differences) unless ``resume_anyway`` or ``overwrite``; ``resume=False``
    (``--no-resume``) starts afresh and refuses a directory holding another run's checkpoints
    unless ``overwrite``. Checkpoints are only written with ``checkpoint_every`` > 0.
    """

    hook: list[str] = field(default_factory=list)
    """Hook name(s), e.g. blocks.6.hook_resid_pre. Several hooks (--hook a b, or --hook a --hook b) are trained together from one model pass. Default: blocks.<n_layers // 2>.hook_resid_pre."""
    width: list[int] = field(default_factory=list)
    """SAE width(s) (d_sae). Several widths give one SAE per hook and width. Default: 16 x the hook's width."""
    exclude_special_tokens: bool = False
    """Drop activations at special-token positions (BOS/EOS/PAD) from training and evaluation."""
    training_tokens: int = 2_000_000
    """Tokens (activation vectors) to train on."""
    batch_tokens: int = 4096
    """Tokens per optimiser step."""
    lr: float = 3e-3
    """Adam learning rate (GBA wants more than SAELens's 3e-4 default)."""
    lr_warm_up_steps: int = 0
    """Linear learning-rate warm-up steps."""
    lr_decay_steps: int = 0
    """Linear decay over the last steps (0: constant learning rate)."""
    buffer_batches: int = 8
    """Size of SAELens's activation shuffle buffer, in training batches."""
    cache_dir: str | None = None
    """Train from activations cached here with SAELens's CacheActivationsRunner (created on first use, reused after; one hook)."""
    eval_tokens: int = 32_768
    """Held-out tokens for the final evaluation (each metric pass)."""
    eval_batch_prompts: int = 8
    """Sequences per evaluation batch."""
    out: str = "runs/gba_lm"
    """Output directory: one SAELens SAE per hook/width, results.json, results.md, a PNG, checkpoints/."""
    checkpoint_every: int = 0
    """Steps between resumable checkpoints in OUT/checkpoints (0: none)."""
    log_every: int = 50
    """Steps between W&B training logs (SAELens also runs its evals every 10 logs)."""
    autocast: bool = False
    """bf16 autocast of the SAE training step (SAELens's ``autocast``; for GPUs)."""
    autocast_lm: bool = False
    """bf16 autocast of the model's forward passes that collect activations (SAELens's ``autocast_lm``)."""
    distribute_hooks: bool = False
    """Under torchrun: each rank trains its share of the hooks' SAEs (hook i on rank i mod N) on every token, instead of data parallel."""

    def __post_init__(self) -> None:
        if isinstance(self.hook, str):  # a single name from Python
            self.hook = [self.hook]
        if isinstance(self.width, int):
            self.width = [self.width]
        if self.model_kind not in ("auto", "hooked", "bridge"):
            raise ValueError(f"model_kind must be auto, hooked or bridge, got {self.model_kind!r}")
        for name in ("training_tokens", "batch_tokens", "eval_tokens", "eval_batch_prompts",
                     "store_batch_prompts", "buffer_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        from gba_lens.training.train import check_training_numbers

        check_training_numbers(non_negative={"checkpoint_every": self.checkpoint_every,
                                             "lr_warm_up_steps": self.lr_warm_up_steps,
                                             "lr_decay_steps": self.lr_decay_steps},
                               positive={"log_every": self.log_every}, positive_finite={"lr": self.lr})
        if self.context_size is not None and self.context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {self.context_size}")
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.width):
            raise ValueError(f"widths must be integers >= 1, got {self.width}")
        if len(set(self.hook)) != len(self.hook):
            raise ValueError(f"hooks given more than once: {self.hook}")
        self.check_run_options()
        if self.training_tokens < self.batch_tokens:
            raise ValueError(f"training_tokens ({self.training_tokens}) < batch_tokens ({self.batch_tokens}): not one step")
        if len(set(self.width)) != len(self.width):
            raise ValueError(f"widths given more than once: {self.width}")
        # The GBA options are checked by GBAOptions itself, each width as the SAE's d_sae.
        self.check_gba_options()
        for width in self.width:
            self.check_gba_options(d_sae=width)


@dataclass
class LMCacheConfig(LMSourceArgs):
    """Cache a model hook's activations to disk with SAELens's CacheActivationsRunner (train many SAEs on it with `gba-lens train --cache-dir`)."""

    hook: str | None = None
    """Hook name to cache (default: blocks.<n_layers // 2>.hook_resid_pre)."""
    tokens: int = 1_000_000
    """Tokens to cache."""
    out: str = "runs/activation_cache"
    """Cache directory (must be empty or absent)."""
