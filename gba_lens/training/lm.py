"""Train GBA SAEs on a language model's hook points: ``gba-lens train`` / :func:`train_gba_on_model`.

    from gba_lens.training.lm import LMTrainConfig, train_gba_on_model

    results = train_gba_on_model(LMTrainConfig(model="gpt2", hook=["blocks.6.hook_resid_pre"],
                                               width=[24576], training_tokens=50_000_000,
                                               device="cuda", wandb_project="gba"))
    results.saes["blocks.6.hook_resid_pre"]          # a plain sae_lens SAE (JumpReLU), loaded back
    results.evals["blocks.6.hook_resid_pre"].metrics  # CE loss recovered, KL, EV, L0, dead, ...

With no ``model`` the offline stdlib LM is used, with no ``dataset`` the stdlib corpus, so
``train_gba_on_model(LMTrainConfig(training_tokens=100_000))`` runs anywhere without a network.

How it is put together (see the modules named):

- training goes through SAELens's ``LanguageModelSAETrainingRunner`` (one SAE) or
  ``MultiSAETrainingRunner`` (several hooks and/or widths from one model pass), with gba_lens's
  ``GBATrainer`` in place of SAELens's trainer (:mod:`gba_lens.training.lm_runner`);
- ``cache_dir``: activations are cached once with SAELens's ``CacheActivationsRunner`` and every
  SAE (e.g. one per width) is trained from the cache without running the model;
- at the end each SAE is saved in SAELens format, loaded back with ``SAE.load_from_disk``, and
  evaluated on held-out tokens with ``sae_lens.evals.run_evals`` (:mod:`gba_lens.training.lm_eval`);
  the table, ``results.json``, a PNG of per-group frequency against target and (optionally) W&B
  get the numbers.

Output directory layout::

    OUT/results.json              every metric, per SAE, plus run settings and throughput
    OUT/results.md                the tables printed at the end
    OUT/group_frequencies.png     per-group firing frequency vs target, one panel per SAE
    OUT/<name>/                   the SAE (cfg.json, sae_weights.safetensors, sparsity, runner cfg)
    OUT/checkpoints/              resumable training checkpoints (safetensors + JSON)

``<name>`` is the hook name, with ``-w<width>`` appended when several widths are trained.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Int
from sae_lens import SAE
from sae_lens.config import LanguageModelSAERunnerConfig, LoggingConfig
from sae_lens.constants import RUNNER_CFG_FILENAME, SPARSITY_FILENAME
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunnerConfig
from safetensors.torch import save_file
from torch import nn

from gba_lens.saes.gba import GBAOptions, GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.training.lm_eval import (
    SAEEvalResult,
    evaluate_sae,
    group_table,
    make_eval_store,
    plot_group_frequencies,
    summary_table,
)
from gba_lens.training.lm_runner import (
    GBALanguageModelRunner,
    GBAMultiSAERunner,
    OfflineCacheActivationsRunner,
)
from gba_lens.training.lm_sources import (
    STDLIB_DATASET_NAME,
    LoadedModel,
    TokenSource,
    check_d_in,
    default_hook,
    held_out_after,
    load_model,
    load_tokens,
    validate_hooks,
)
from gba_lens.training.train import finish_wandb, resolve_device, start_wandb
from gba_lens.training.trainer import latest_checkpoint

logger = logging.getLogger(__name__)

CACHE_INFO_FILENAME = "gba_lens_cache.json"
RESULTS_FILENAME = "results.json"
PLOT_FILENAME = "group_frequencies.png"


# --------------------------------------------------------------------------------- configs
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
class LMTrainConfig(LMSourceArgs, GBAOptions):
    """Train GBA SAEs on a language model's hook points (SAELens runners + GBA trainer), then evaluate them on held-out tokens."""

    hook: list[str] = field(default_factory=list)
    """Hook name(s), e.g. blocks.6.hook_resid_pre. Several hooks are trained together from one model pass. Default: blocks.<n_layers // 2>.hook_resid_pre."""
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
    resume: bool = False
    """Resume from the newest checkpoint in OUT/checkpoints."""
    wandb_project: str | None = None
    """Log training and the final evaluation to this W&B project (offline-safe; failures never stop training)."""
    wandb_run_name: str | None = None
    """W&B run name."""
    log_every: int = 50
    """Steps between W&B training logs (SAELens also runs its evals every 10 logs)."""

    def __post_init__(self) -> None:
        if isinstance(self.hook, str):  # a single name from Python
            self.hook = [self.hook]
        if isinstance(self.width, int):
            self.width = [self.width]
        if self.model_kind not in ("auto", "hooked", "bridge"):
            raise ValueError(f"model_kind must be auto, hooked or bridge, got {self.model_kind!r}")
        if self.gating not in ("jumprelu", "relu"):
            raise ValueError(f"gating must be jumprelu or relu, got {self.gating!r}")
        for name in ("training_tokens", "batch_tokens", "eval_tokens", "eval_batch_prompts",
                     "store_batch_prompts", "buffer_batches", "n_groups", "update_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.training_tokens < self.batch_tokens:
            raise ValueError(f"training_tokens ({self.training_tokens}) < batch_tokens ({self.batch_tokens}): not one step")
        if any(w < self.n_groups for w in self.width):
            raise ValueError(f"every width must be >= n_groups ({self.n_groups}), got {self.width}")
        if len(set(self.width)) != len(self.width):
            raise ValueError(f"widths given more than once: {self.width}")


@dataclass
class LMCacheConfig(LMSourceArgs):
    """Cache a model hook's activations to disk with SAELens's CacheActivationsRunner (train many SAEs on it with `gba-lens train --cache-dir`)."""

    hook: str | None = None
    """Hook name to cache (default: blocks.<n_layers // 2>.hook_resid_pre)."""
    tokens: int = 1_000_000
    """Tokens to cache."""
    out: str = "runs/activation_cache"
    """Cache directory (must be empty or absent)."""


# -------------------------------------------------------------------------------- results
@dataclass
class LMTrainResults:
    """What :func:`train_gba_on_model` returns.

    Attributes:
        saes: ``{name: SAE}``, each loaded back from disk with plain ``sae_lens.SAE.load_from_disk``.
        training_saes: the trained ``GBATrainingSAE`` objects (with the bias controller).
        evals: ``{name: SAEEvalResult}``, held-out metrics.
        model: the model and what was recorded about it.
        out_dir, results_path, plot_path: where things were written.
        train_seconds, tokens_per_second: wall time of training (model passes included) and
            activation vectors consumed per second.
        hook_names: ``{name: hook_name}``.
        token_source, dataset_rows_used: the data, and how many dataset rows training consumed
            (see :func:`held_out_tokens`).
    """

    saes: dict[str, SAE[Any]]
    training_saes: dict[str, GBATrainingSAE]
    evals: dict[str, SAEEvalResult]
    model: LoadedModel
    out_dir: Path
    results_path: Path
    plot_path: Path
    train_seconds: float
    tokens_per_second: float
    hook_names: dict[str, str]
    token_source: TokenSource
    dataset_rows_used: int

    def table(self) -> str:
        """The summary and per-group tables, as printed by ``gba-lens train``."""
        parts = [summary_table(list(self.evals.values()))]
        parts += [group_table(r) for r in self.evals.values()]
        return "\n\n".join(parts)


# ---------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _quiet_saelens() -> Iterator[None]:
    """SAELens warns that override_model/override_dataset make a run "not reproducible from
    configuration alone" (true, and recorded in results.json) and about dataset epochs."""
    log = logging.getLogger("sae_lens")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fewer samples.*")
            warnings.filterwarnings("ignore", message=".*pretokenized dataset has context_size.*")
            warnings.filterwarnings("ignore", message=".*To copy construct from a tensor.*")
            yield
    finally:
        log.setLevel(level)


def _wrap_model(model: nn.Module, spec: str | None) -> LoadedModel:
    from gba_lens.models.stdlib_lm import STDLIB_LM_NAME

    name = spec or getattr(getattr(model, "cfg", None), "model_name", None) or STDLIB_LM_NAME
    return LoadedModel(model, str(name), type(model).__name__)


def _n_batches_in_buffer(cfg: LMTrainConfig, context_size: int) -> int:
    # SAELens's shuffle buffer holds n_batches_in_buffer * context_size tokens and must hold at
    # least one training batch.
    return max(2, math.ceil(cfg.buffer_batches * cfg.batch_tokens / context_size))


def _logging_config(cfg: LMTrainConfig, on: bool) -> LoggingConfig:
    return LoggingConfig(
        log_to_wandb=on,
        wandb_project=cfg.wandb_project or "gba_lens",
        run_name=cfg.wandb_run_name,
        wandb_log_frequency=cfg.log_every,
        eval_every_n_wandb_logs=10,
        log_weights_to_wandb=False,
    )


def _sae_config(cfg: LMTrainConfig, d_in: int, width: int, device: str) -> GBATrainingSAEConfig:
    return GBATrainingSAEConfig(d_in=d_in, d_sae=width, device=device, dtype=cfg.dtype, **cfg.gba_options())


def _plan(cfg: LMTrainConfig, hooks: list[str], d_ins: dict[str, int]) -> list[tuple[str, str, int]]:
    """(name, hook, width) of every SAE to train."""
    several_widths = len(cfg.width) > 1
    plan = []
    for hook in hooks:
        for width in cfg.width or [16 * d_ins[hook]]:
            if width < cfg.n_groups:
                raise ValueError(f"width {width} < n_groups {cfg.n_groups}")
            plan.append((f"{hook}-w{width}" if several_widths else hook, hook, width))
    return plan


def _shared_runner_fields(
    cfg: LMTrainConfig, loaded: LoadedModel, source: TokenSource, device: str, wandb_on: bool, checkpoint_dir: Path,
) -> dict[str, Any]:
    """Fields common to SAELens's single- and multi-SAE runner configs."""
    return dict(
        model_name=loaded.model_name,
        model_class_name=loaded.model_class_name,
        model_from_pretrained_kwargs=dict(loaded.from_pretrained_kwargs),
        dataset_path=source.dataset_path,
        streaming=source.streaming,
        context_size=source.context_size,
        n_batches_in_buffer=_n_batches_in_buffer(cfg, source.context_size),
        training_tokens=cfg.training_tokens,
        store_batch_size_prompts=cfg.store_batch_prompts,
        exclude_special_tokens=cfg.exclude_special_tokens,
        device=device,
        seed=cfg.seed,
        dtype=cfg.dtype,
        train_batch_size_tokens=cfg.batch_tokens,
        lr=cfg.lr,
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        n_eval_batches=2,
        eval_batch_size_prompts=cfg.eval_batch_prompts,
        logger=_logging_config(cfg, wandb_on),
        checkpoint_path=str(checkpoint_dir),
        output_path=None,
        n_batches_for_norm_estimate=1,  # GBA normalises inside the SAE; nothing to estimate
    )


def _runner_config(
    cfg: LMTrainConfig, loaded: LoadedModel, source: TokenSource, sae_cfg: GBATrainingSAEConfig,
    hook: str, device: str, wandb_on: bool, checkpoint_dir: Path, cache_dir: Path | None,
) -> LanguageModelSAERunnerConfig[Any]:
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        hook_name=hook,
        use_cached_activations=cache_dir is not None,
        cached_activations_path=None if cache_dir is None else str(cache_dir),
        verbose=False,
        **_shared_runner_fields(cfg, loaded, source, device, wandb_on, checkpoint_dir),
    )
    # SAELens appends a random id to checkpoint_path; a stable directory is what makes resuming work.
    runner_cfg.checkpoint_path = str(checkpoint_dir)
    return runner_cfg


def _multi_config(
    cfg: LMTrainConfig, loaded: LoadedModel, source: TokenSource, sae_cfgs: dict[str, GBATrainingSAEConfig],
    hooks: dict[str, str], device: str, wandb_on: bool, checkpoint_dir: Path,
) -> MultiSAETrainingRunnerConfig:
    multi = MultiSAETrainingRunnerConfig(
        saes=sae_cfgs,
        hook_names=hooks,
        **_shared_runner_fields(cfg, loaded, source, device, wandb_on, checkpoint_dir),
    )
    multi.checkpoint_path = str(checkpoint_dir)
    return multi


def _save_sae(sae: GBATrainingSAE, directory: Path, sparsity: torch.Tensor | None, runner_cfg: dict[str, Any]) -> None:
    """What SAELens's ``save_final_sae`` writes (minus its unguarded W&B artifact upload)."""
    directory.mkdir(parents=True, exist_ok=True)
    sae.save_inference_model(str(directory))
    if sparsity is not None:
        save_file({"sparsity": sparsity.detach().cpu().contiguous()}, str(directory / SPARSITY_FILENAME))
    (directory / RUNNER_CFG_FILENAME).write_text(json.dumps(runner_cfg, default=str))


def _special_token_ids(model: nn.Module) -> list[int]:
    from sae_lens.util import get_special_token_ids

    tok = getattr(model, "tokenizer", None)
    return [] if tok is None else list(get_special_token_ids(tok))


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------ caching
def cache_lm_activations(cfg: LMCacheConfig, *, model: nn.Module | None = None) -> Path:
    """Cache one hook's activations with SAELens's ``CacheActivationsRunner``; returns the directory.

    The cache is a plain SAELens activation cache (a ``datasets`` directory with one column per
    hook plus ``token_ids``), with a ``gba_lens_cache.json`` describing where it came from.
    """
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed)
    loaded = _wrap_model(model, cfg.model) if model is not None else load_model(cfg.model, cfg.model_kind, device)
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
    from sae_lens.config import CacheActivationsRunnerConfig

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
    with _quiet_saelens():
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


def _after_cached_rows(source: TokenSource, rows_used: int, eval_tokens: int) -> TokenSource:
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


def _check_cache(cache_dir: Path, hook: str, d_in: int) -> dict[str, Any]:
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


# ------------------------------------------------------------------------------- training
def train_gba_on_model(cfg: LMTrainConfig, *, model: nn.Module | None = None) -> LMTrainResults:
    """Train GBA SAEs on hook points of a language model and evaluate them on held-out tokens.

    Args:
        cfg: what to train (see :class:`LMTrainConfig`; every field is a ``gba-lens train`` option).
        model: an already-loaded TransformerLens model to use instead of ``cfg.model`` (e.g. in a
            notebook that attaches the SAE to the same model afterwards).

    Raises:
        UnknownHookNameError: a hook name is not in ``model.hook_dict`` (close matches listed),
            before anything is trained.
        ValueError: inconsistent settings, or a cache / checkpoint whose ``d_in`` does not match.
    """
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed)
    out = Path(cfg.out)
    loaded = _wrap_model(model, cfg.model) if model is not None else load_model(cfg.model, cfg.model_kind, device)
    hooks = list(cfg.hook) or [default_hook(loaded)]
    d_ins = validate_hooks(loaded.model, hooks)  # fails here, before any training, on a bad name
    plan = _plan(cfg, hooks, d_ins)

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    cache_info: dict[str, Any] = {}
    if cache_dir is not None:
        if len(hooks) > 1:
            raise ValueError("--cache-dir trains from one cached hook; pass a single --hook")
        if not cache_dir.exists() or not any(cache_dir.iterdir()):
            cache_lm_activations(
                LMCacheConfig(model=cfg.model, model_kind=cfg.model_kind, dataset=cfg.dataset,
                              context_size=cfg.context_size, store_batch_prompts=cfg.store_batch_prompts,
                              device=device, dtype=cfg.dtype, seed=cfg.seed, hook=hooks[0],
                              tokens=cfg.training_tokens, out=str(cache_dir)),
                model=loaded.model,
            )
        cache_info = _check_cache(cache_dir, hooks[0], d_ins[hooks[0]])
        if cfg.context_size is not None and cfg.context_size != cache_info["context_size"]:
            raise ValueError(f"context_size {cfg.context_size} differs from the cache's {cache_info['context_size']}")

    ctx_hint = cache_info.get("context_size", cfg.context_size)
    buffer_tokens = _n_batches_in_buffer(cfg, ctx_hint or 128) * (ctx_hint or 128)
    # Training from a cache needs tokens only for SAELens's in-training evals.
    train_budget = 8 * cfg.store_batch_prompts * 128 if cache_dir else cfg.training_tokens + 2 * buffer_tokens
    source = load_tokens(cfg.dataset, loaded, ctx_hint, train_tokens=train_budget, eval_tokens=2 * cfg.eval_tokens)
    if cache_dir is not None and source.train is not None and source.dataset_path != STDLIB_DATASET_NAME:
        # The cache was filled from the first rows of the same local data: evaluate after them.
        # (+1: SAELens counts a row only once the next one is requested.)
        source = _after_cached_rows(source, int(cache_info.get("dataset_rows_used", 0)) + 1, 2 * cfg.eval_tokens)

    checkpoint_dir = out / "checkpoints"

    run_config = {"gba_lens": asdict(cfg), "model_name": loaded.model_name, "hooks": {n: h for n, h, _ in plan},
                  "d_in": d_ins, "dataset_path": source.dataset_path, "context_size": source.context_size}
    wandb_on = start_wandb(cfg.wandb_project, cfg.wandb_run_name, run_config) if cfg.wandb_project else False
    try:
        sae_cfgs = {name: _sae_config(cfg, d_ins[hook], width, device) for name, hook, width in plan}
        hook_of = {name: hook for name, hook, _ in plan}
        trained: dict[str, GBATrainingSAE] = {}
        sparsity: dict[str, torch.Tensor | None] = {}
        runner_dicts: dict[str, dict[str, Any]] = {}
        resumed: dict[str, str | None] = {}
        rows_used = 0
        start = time.perf_counter()
        if len(plan) == 1 or cache_dir is not None:
            # One SAE at a time through LanguageModelSAETrainingRunner (from the cache: each SAE
            # reads the cached activations; the model never runs during training).
            for name, hook, _ in plan:
                run_dir = checkpoint_dir if len(plan) == 1 else checkpoint_dir / name
                run_resume = latest_checkpoint(run_dir) if cfg.resume else None
                if run_resume is not None:
                    _check_checkpoint_d_in(run_resume, hook, d_ins[hook])
                runner_cfg = _runner_config(cfg, loaded, source, sae_cfgs[name], hook, device, wandb_on, run_dir, cache_dir)
                with _quiet_saelens():
                    torch.manual_seed(cfg.seed)
                    runner = GBALanguageModelRunner(
                        runner_cfg, override_dataset=source.train, override_model=loaded.model,
                        checkpoint_every=cfg.checkpoint_every, resume_from=run_resume,
                    )
                    trained[name] = runner.run()  # type: ignore[assignment]
                resumed[name] = None if run_resume is None else str(run_resume)
                assert runner.trainer is not None
                sparsity[name] = runner.trainer.log_feature_sparsity
                runner_dicts[name] = runner_cfg.to_dict()
                rows_used = max(rows_used, runner.activations_store.n_dataset_processed)
            if cache_dir is not None:
                rows_used = int(cache_info.get("dataset_rows_used", rows_used))
        else:
            resume_from = latest_checkpoint(checkpoint_dir) if cfg.resume else None
            if resume_from is not None:
                for name, hook, _ in plan:
                    _check_checkpoint_d_in(resume_from / name, hook, d_ins[hook])
            multi_cfg = _multi_config(cfg, loaded, source, sae_cfgs, hook_of, device, wandb_on, checkpoint_dir)
            with _quiet_saelens():
                torch.manual_seed(cfg.seed)
                multi = GBAMultiSAERunner(multi_cfg, override_dataset=source.train, override_model=loaded.model,
                                          checkpoint_every=cfg.checkpoint_every, resume_from=resume_from)
                trained = multi.run()  # type: ignore[assignment]
            resumed = {name: None if resume_from is None else str(resume_from / name) for name, _, _ in plan}
            assert multi.trainer is not None
            for name in trained:
                sparsity[name] = multi.trainer.trainers[name].log_feature_sparsity
                runner_dicts[name] = {**multi_cfg.to_dict(), "sae_name": name}
            rows_used = multi.activations_store.n_dataset_processed
        train_seconds = time.perf_counter() - start

        # Save in SAELens format, load back with plain SAELens, evaluate what was saved.
        saes: dict[str, SAE[Any]] = {}
        evals: dict[str, SAEEvalResult] = {}
        eval_data = source.eval if source.eval is not None else held_out_after(source, rows_used)
        n_eval_batches = max(1, cfg.eval_tokens // (cfg.eval_batch_prompts * source.context_size))
        special = _special_token_ids(loaded.model) if cfg.exclude_special_tokens else False
        for name, hook, _ in plan:
            sae_dir = out / name
            _save_sae(trained[name], sae_dir, sparsity[name], runner_dicts[name])
            saes[name] = SAE.load_from_disk(str(sae_dir), device=device)
            store = make_eval_store(loaded.model, eval_data, hook, d_ins[hook], source.context_size,
                                    cfg.eval_batch_prompts, device, cfg.dtype)
            with _quiet_saelens():
                evals[name] = evaluate_sae(
                    saes[name], loaded.model, store, name=name, n_batches=n_eval_batches,
                    batch_prompts=cfg.eval_batch_prompts, exclude_special_tokens=special or False,
                    controller=trained[name].bias_adaptation,
                )
        plot_path = plot_group_frequencies(list(evals.values()), out / PLOT_FILENAME)
        if cfg.resume and not any(resumed.values()):
            warnings.warn(f"--resume: no checkpoint in {checkpoint_dir}; trained from scratch")
        # Activation vectors consumed per second: one pass for all SAEs of a multi-SAE run, one
        # pass per SAE when several widths are trained one after another from a cache.
        passes = len(plan) if (cache_dir is not None and len(plan) > 1) else 1
        tokens_per_second = passes * cfg.training_tokens / max(train_seconds, 1e-9)
        results = LMTrainResults(
            saes=saes, training_saes=trained, evals=evals, model=loaded, out_dir=out,
            results_path=out / RESULTS_FILENAME, plot_path=plot_path, train_seconds=train_seconds,
            tokens_per_second=tokens_per_second, hook_names=hook_of, token_source=source,
            dataset_rows_used=rows_used,
        )
        payload = {
            "model_name": loaded.model_name,
            "model_class_name": loaded.model_class_name,
            "dataset_path": source.dataset_path,
            "context_size": source.context_size,
            "training_tokens": cfg.training_tokens,
            "train_seconds": train_seconds,
            "tokens_per_second": tokens_per_second,
            "dataset_rows_used": rows_used,
            "from_cache": None if cache_dir is None else str(cache_dir),
            "resumed_from": resumed if len(plan) > 1 else resumed[plan[0][0]],
            "config": asdict(cfg),
            "saes": {name: {**evals[name].to_dict(), "path": str(out / name)} for name in evals},
        }
        out.mkdir(parents=True, exist_ok=True)
        results.results_path.write_text(json.dumps(payload, indent=2, default=str))
        (out / "results.md").write_text(results.table() + "\n")
        if wandb_on:
            _log_results_to_wandb(results)
        return results
    finally:
        if wandb_on:
            finish_wandb()


def held_out_tokens(results: LMTrainResults, n_rows: int) -> Int[torch.Tensor, "n_rows context"]:
    """``n_rows`` rows of held-out tokens (never trained on) from the run's dataset.

    The same held-out data the final evaluation used: the stdlib ``val`` split, the rows held
    back from local data, or the rows of a streamed dataset after those training consumed.
    Handy for looking at top-activating contexts of features. Text rows are tokenised with the
    model's tokenizer and cut into BOS-prefixed rows of the run's context size.
    """
    from gba_lens.models.stdlib_lm import chunk_stream, tokenize_corpus

    source = results.token_source
    ctx = source.context_size
    data = source.eval if source.eval is not None else held_out_after(source, results.dataset_rows_used)
    rows: list[list[int]] = []
    texts: list[str] = []
    for row in data:
        column = "tokens" if "tokens" in row else "input_ids" if "input_ids" in row else None
        if column is not None:
            tokens = list(row[column])
            if len(tokens) >= ctx:
                rows.append([int(t) for t in tokens[:ctx]])
        elif "text" in row:
            texts.append(row["text"])
        if len(rows) >= n_rows or sum(len(t) for t in texts) > 8 * n_rows * ctx:
            break
    if texts:
        tok = results.model.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        rows += chunk_stream(tokenize_corpus(tok, texts), ctx, int(bos)).tolist()
    if not rows:
        raise ValueError("no held-out rows of the run's context size are available")
    return torch.tensor(rows[:n_rows], dtype=torch.long)


def _check_checkpoint_d_in(checkpoint: Path, hook: str, d_in: int) -> None:
    cfg_file = Path(checkpoint) / "cfg.json"
    if cfg_file.exists():
        check_d_in(hook, d_in, int(json.loads(cfg_file.read_text())["d_in"]), f"checkpoint {checkpoint}")


def _log_results_to_wandb(results: LMTrainResults) -> None:
    """Final metrics, group table and plot into the open W&B run; never raises."""
    try:
        import wandb

        if wandb.run is None:
            return
        flat: dict[str, Any] = {}
        for name, r in results.evals.items():
            for key, value in r.metrics.items():
                flat[f"final_eval/{name}/{key}"] = value
            rows = [[k, t, f] for k, (t, f) in enumerate(zip(r.group_targets, r.group_frequencies))]
            flat[f"final_eval/{name}/groups"] = wandb.Table(columns=["group", "target", "frequency"], data=rows)
        flat["final_eval/group_frequencies"] = wandb.Image(str(results.plot_path))
        flat["final_eval/tokens_per_second"] = results.tokens_per_second
        wandb.log(flat)
        for key, value in flat.items():
            if isinstance(value, (int, float)):
                wandb.run.summary[key] = value
    except Exception as exc:  # noqa: BLE001 - logging must never fail the run
        warnings.warn(f"W&B logging of the final evaluation failed: {exc!r}")
