"""``train_gba_on_model``: load, plan, (cache,) train, save, evaluate, report.

Every SAE of a run is trained by one loop over *groups*: one group holding every SAE when
several hooks / widths are trained from one model pass (SAELens's ``MultiSAETrainingRunner``),
otherwise one group per SAE (``LanguageModelSAETrainingRunner``: a single SAE, or several widths
trained one after another from an activation cache). Saving, evaluation and reporting are the
same for both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from torch import nn

from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.gba_options import EXECUTION_OPTIONS
from gba_lens.training import distributed
from gba_lens.training.device import resolve_device
from gba_lens.training.lm.cache import after_cached_rows, cache_lm_activations, check_cache
from gba_lens.training.lm.config import LMCacheConfig, LMTrainConfig
from gba_lens.training.lm.distributed import (
    gather_evaluations,
    hook_share,
    rank_checkpoint_dir,
    rank_source,
    rank_store_batch,
)
from gba_lens.training.lm.evaluate import (
    SAEEvalResult,
    evaluate_sae,
    make_eval_store,
    plot_group_frequencies,
    special_token_ids,
)
from gba_lens.training.lm.report import (
    PLOT_FILENAME,
    RESULTS_FILENAME,
    LMTrainResults,
    log_results_to_wandb,
    save_sae,
    write_results,
)
from gba_lens.training.lm.runner import (
    GBALanguageModelRunner,
    GBAMultiSAERunner,
    quiet_saelens,
    seed_everything,
)
from gba_lens.training.lm.runner_config import multi_runner_config, n_batches_in_buffer, runner_config, sae_config
from gba_lens.training.lm.sources import (
    STDLIB_DATASET_NAME,
    LoadedModel,
    TokenSource,
    default_hook,
    held_out_after,
    load_model,
    load_tokens,
    validate_hooks,
    wrap_model,
)
from gba_lens.training.checkpoints import check_finite_sae
from gba_lens.training.run_settings import file_identity, prepare_run_directory
from gba_lens.training.trainer import latest_checkpoint, list_checkpoints
from gba_lens.wandb_run import finish_run, start_run

__all__ = ["train_gba_on_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _PlannedSAE:
    name: str
    hook: str
    width: int


@dataclass
class _Trained:
    """What the training groups produced, per SAE name."""

    saes: dict[str, GBATrainingSAE] = field(default_factory=dict)
    sparsity: dict[str, torch.Tensor | None] = field(default_factory=dict)
    runner_cfgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed: dict[str, str | None] = field(default_factory=dict)
    unsettled_l0: dict[str, str | None] = field(default_factory=dict)
    """The end-of-run warning of each SAE whose L0 had not settled (None where it had)."""
    rows_used: int = 0


@dataclass
class _Run:
    """The resolved pieces every training group uses."""

    cfg: LMTrainConfig
    resume: bool
    loaded: LoadedModel
    source: TokenSource
    device: str
    d_ins: dict[str, int]
    sae_cfgs: dict[str, GBATrainingSAEConfig]
    wandb_on: bool
    cache_dir: Path | None


def _plan(cfg: LMTrainConfig, hooks: list[str], d_ins: dict[str, int]) -> list[_PlannedSAE]:
    """Every SAE to train: one per hook and width (default width: 16 x the hook's width)."""
    several_widths = len(cfg.width) > 1
    return [
        _PlannedSAE(f"{hook}-w{width}" if several_widths else hook, hook, width)
        for hook in hooks
        for width in cfg.width or [16 * d_ins[hook]]
    ]


def run_settings(cfg: LMTrainConfig, loaded: LoadedModel, source: TokenSource, plan: list[_PlannedSAE],
                 d_ins: dict[str, int], cache_info: dict[str, Any]) -> dict[str, Any]:
    """What defines a ``gba-lens train`` run (recorded in OUT/checkpoints, checked on resume).
    Evaluation, logging, device and checkpoint interval are left out: they change no weight."""
    data: dict[str, Any] = {"dataset": source.dataset_path, "context_size": source.context_size}
    if cfg.dataset and Path(cfg.dataset).exists():
        data.update(file_identity(cfg.dataset))
    if cfg.cache_dir:
        data["cache"] = {**file_identity(cfg.cache_dir), **{k: v for k, v in cache_info.items() if k != "path"}}
    train = {k: getattr(cfg, k) for k in ("training_tokens", "batch_tokens", "lr", "lr_warm_up_steps",
                                          "lr_decay_steps", "buffer_batches", "store_batch_prompts", "seed",
                                          "dtype", "exclude_special_tokens")}
    return {
        "model": {"name": loaded.model_name, "class": loaded.model_class_name},
        "saes": {p.name: {"hook": p.hook, "width": p.width, "d_in": d_ins[p.hook]} for p in plan},
        "gba": {k: v for k, v in cfg.gba_options().items() if k not in EXECUTION_OPTIONS},
        "train": train,
        "data": data,
    }


def _train_group(run: _Run, group: list[_PlannedSAE], run_dir: Path, trained: _Trained) -> None:
    """Train ``group`` (one SAE, or several from one model pass) into ``trained``."""
    cfg = run.cfg
    candidates = list_checkpoints(run_dir) if run.resume else []
    multi = len(group) > 1
    common = dict(override_dataset=run.source.train, override_model=run.loaded.model,
                  checkpoint_every=cfg.checkpoint_every, resume_from=candidates)
    if multi:
        runner_cfg: Any = multi_runner_config(
            cfg, run.loaded, run.source, {p.name: run.sae_cfgs[p.name] for p in group},
            {p.name: p.hook for p in group}, run.device, run.wandb_on, run_dir,
        )
    else:
        runner_cfg = runner_config(cfg, run.loaded, run.source, run.sae_cfgs[group[0].name], group[0].hook,
                                   run.device, run.wandb_on, run_dir, run.cache_dir)
    if _data_parallel(cfg):  # this rank's store yields its share of each batch
        runner_cfg.train_batch_size_tokens = rank_store_batch(cfg.batch_tokens)
    with quiet_saelens():
        torch.manual_seed(cfg.seed)
        if multi:
            runner: Any = GBAMultiSAERunner(runner_cfg, **common, data_parallel=_data_parallel(cfg))
            saes = runner.run()
        else:
            runner = GBALanguageModelRunner(runner_cfg, **common, data_parallel=_data_parallel(cfg))
            saes = {group[0].name: runner.run()}
    assert runner.trainer is not None
    for p in group:
        trained.saes[p.name] = saes[p.name]
        sae_trainer = runner.trainer.trainers[p.name] if multi else runner.trainer
        trained.sparsity[p.name] = sae_trainer.log_feature_sparsity
        trained.runner_cfgs[p.name] = {**runner_cfg.to_dict(), "sae_name": p.name} if multi else runner_cfg.to_dict()
        resumed = runner.resumed_from
        trained.resumed[p.name] = None if resumed is None else str(resumed / p.name if multi else resumed)
        trained.unsettled_l0[p.name] = sae_trainer.unsettled_l0()

    trained.rows_used = max(trained.rows_used, runner.activations_store.n_dataset_processed)


def _prepare_cache(cfg: LMTrainConfig, loaded: LoadedModel, hooks: list[str], d_ins: dict[str, int],
                   device: str) -> tuple[Path | None, dict[str, Any]]:
    """With ``cfg.cache_dir``: fill the cache if it is empty, check it; returns it and its description."""
    if not cfg.cache_dir:
        return None, {}
    cache_dir = Path(cfg.cache_dir)
    if len(hooks) > 1:
        raise ValueError("--cache-dir trains from one cached hook; pass a single --hook")
    if not cache_dir.exists() or not any(cache_dir.iterdir()):
        if _data_parallel(cfg):  # filling takes as long as the training: not while peers wait
            raise ValueError(f"under torchrun, --cache-dir must already hold a cache: build it first with "
                             f"one process (gba-lens cache --hook {hooks[0]} --out {cache_dir} ...)")
        cache_lm_activations(
            LMCacheConfig(model=cfg.model, model_kind=cfg.model_kind, dataset=cfg.dataset,
                          context_size=cfg.context_size, store_batch_prompts=cfg.store_batch_prompts,
                          device=device, dtype=cfg.dtype, seed=cfg.seed, hook=hooks[0],
                          tokens=cfg.training_tokens, out=str(cache_dir)),
            model=loaded.model,
        )
    cache_info = check_cache(cache_dir, hooks[0], d_ins[hooks[0]])
    if cfg.context_size is not None and cfg.context_size != cache_info["context_size"]:
        raise ValueError(f"context_size {cfg.context_size} differs from the cache's {cache_info['context_size']}")
    return cache_dir, cache_info


def _load_source(cfg: LMTrainConfig, loaded: LoadedModel, cache_dir: Path | None,
                 cache_info: dict[str, Any]) -> TokenSource:
    """Training and held-out tokens (after the rows a cache consumed, for local data)."""
    ctx_hint = cache_info.get("context_size", cfg.context_size)
    buffer_tokens = n_batches_in_buffer(cfg, ctx_hint or 128) * (ctx_hint or 128)
    # Training from a cache needs tokens only for SAELens's in-training evals.
    train_budget = 8 * cfg.store_batch_prompts * 128 if cache_dir else cfg.training_tokens + 2 * buffer_tokens
    source = load_tokens(cfg.dataset, loaded, ctx_hint, train_tokens=train_budget, eval_tokens=2 * cfg.eval_tokens)
    if cache_dir is not None and source.train is not None and source.dataset_path != STDLIB_DATASET_NAME:
        # The cache was filled from the first rows of the same local data: evaluate after them.
        # (+1: SAELens counts a row only once the next one is requested.)
        source = after_cached_rows(source, int(cache_info.get("dataset_rows_used", 0)) + 1, 2 * cfg.eval_tokens)
    return source


def _save_and_evaluate(run: _Run, plan: list[_PlannedSAE], trained: _Trained,
                       out: Path) -> tuple[dict[str, SAE[Any]], dict[str, SAEEvalResult]]:
    """Save each SAE in SAELens format, load it back with plain SAELens, evaluate what was saved."""
    cfg, source = run.cfg, run.source
    saes: dict[str, SAE[Any]] = {}
    evals: dict[str, SAEEvalResult] = {}
    eval_data = source.eval if source.eval is not None else held_out_after(source, trained.rows_used)
    n_eval_batches = max(1, cfg.eval_tokens // (cfg.eval_batch_prompts * source.context_size))
    special = special_token_ids(run.loaded.model) if cfg.exclude_special_tokens else False
    for p in plan:
        sae_dir = out / p.name
        save_sae(trained.saes[p.name], sae_dir, trained.sparsity[p.name], trained.runner_cfgs[p.name])
        saes[p.name] = SAE.load_from_disk(str(sae_dir), device=run.device)
        store = make_eval_store(run.loaded.model, eval_data, p.hook, run.d_ins[p.hook], source.context_size,
                                cfg.eval_batch_prompts, run.device, cfg.dtype)
        with quiet_saelens():
            evals[p.name] = evaluate_sae(
                saes[p.name], run.loaded.model, store, name=p.name, n_batches=n_eval_batches,
                batch_prompts=cfg.eval_batch_prompts, exclude_special_tokens=special or False,
                controller=trained.saes[p.name].bias_adaptation,
            )
    return saes, evals


def _data_parallel(cfg: LMTrainConfig) -> bool:
    return distributed.is_distributed() and not cfg.distribute_hooks


def train_gba_on_model(cfg: LMTrainConfig, *, model: nn.Module | None = None) -> LMTrainResults | None:
    """Train GBA SAEs on hook points of a language model and evaluate them on held-out tokens.

    Args:
        cfg: what to train (see :class:`LMTrainConfig`; every field is a ``gba-lens train`` option).
        model: an already-loaded TransformerLens model to use instead of ``cfg.model`` (e.g. in a
            notebook that attaches the SAE to the same model afterwards).

    Under ``torchrun`` every rank calls this; ranks other than 0 return ``None``.

    Raises:
        UnknownHookNameError: a hook name is not in ``model.hook_dict`` (close matches listed),
            before anything is trained.
        ValueError: inconsistent settings, or a cache / checkpoint whose ``d_in`` does not match.
    """
    device = resolve_device(cfg.device)
    if distributed.is_distributed():  # one rank of a torchrun launch (gba_lens.training.lm.distributed)
        distributed.ensure_process_group()
        device = distributed.rank_device(device)
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    loaded = wrap_model(model, cfg.model) if model is not None else load_model(cfg.model, cfg.model_kind, device)
    hooks = list(cfg.hook) or [default_hook(loaded)]
    d_ins = validate_hooks(loaded.model, hooks)  # fails here, before any training, on a bad name
    plan = _plan(cfg, hooks, d_ins)
    # Built (and so validated, e.g. width >= n_groups) before anything runs.
    sae_cfgs = {p.name: sae_config(cfg, d_ins[p.hook], p.width, device) for p in plan}
    cache_dir, cache_info = _prepare_cache(cfg, loaded, hooks, d_ins, device)
    source = _load_source(cfg, loaded, cache_dir, cache_info)
    checkpoint_dir = out / "checkpoints"
    mine = plan  # the SAEs this process trains
    if _data_parallel(cfg):
        source = rank_source(source)
    elif distributed.is_distributed() and cfg.distribute_hooks:
        mine, checkpoint_dir = hook_share(plan), rank_checkpoint_dir(checkpoint_dir)

    # Refuses, before anything runs, a directory holding another run (see run_settings).
    # Data parallel: rank 0 checks the shared directory and every rank follows its decision;
    # with --distribute-hooks each rank has a directory of its own.
    settings = run_settings(cfg, loaded, source, plan, d_ins, cache_info)

    def prepare() -> bool:
        return prepare_run_directory(checkpoint_dir, settings, resume=cfg.resume,
                                     resume_anyway=cfg.resume_anyway, overwrite=cfg.overwrite)

    resume = distributed.on_main_then_share(prepare) if _data_parallel(cfg) else prepare()
    run_config = {"gba_lens": asdict(cfg), "model_name": loaded.model_name, "hooks": {p.name: p.hook for p in plan},
                  "d_in": d_ins, "dataset_path": source.dataset_path, "context_size": source.context_size}
    wandb_on = distributed.is_main_process() and start_run(cfg.wandb_project, cfg.wandb_run_name, run_config)
    run = _Run(cfg, resume, loaded, source, device, d_ins, sae_cfgs, wandb_on, cache_dir)
    try:
        # Several SAEs from one model pass, unless each reads the cache (the model never runs).
        groups = [mine] if len(mine) > 1 and cache_dir is None else [[p] for p in mine]
        trained = _Trained()
        start = time.perf_counter()
        for group in groups:
            run_dir = checkpoint_dir if len(groups) == 1 else checkpoint_dir / group[0].name
            _train_group(run, group, run_dir, trained)
        if cache_dir is not None:
            trained.rows_used = int(cache_info.get("dataset_rows_used", trained.rows_used))
        train_seconds = time.perf_counter() - start
        if _data_parallel(cfg):
            if not distributed.is_main_process():
                return None  # rank 0 alone saves, evaluates and reports
            if cache_dir is None:  # every rank read as many rows of its shard (a cache counts them all)
                trained.rows_used *= distributed.world_size()
        if cfg.resume and not any(trained.resumed.values()):
            logger.info("no checkpoint in %s: trained from scratch", checkpoint_dir)
        check_finite_sae(dict(trained.saes), "at the end of training", latest_checkpoint(checkpoint_dir))

        saes, evals = _save_and_evaluate(run, mine, trained, out)
        if mine is not plan:  # --distribute-hooks: rank 0 reports every rank's SAEs
            evals = gather_evaluations(evals)
            if not distributed.is_main_process():
                return None
            evals = {p.name: evals[p.name] for p in plan}
            saes = {p.name: saes[p.name] if p.name in saes else SAE.load_from_disk(str(out / p.name), device=device)
                    for p in plan}
        plot_path = plot_group_frequencies(list(evals.values()), out / PLOT_FILENAME)
        # Activation vectors consumed per second: one pass for all SAEs of a multi-SAE run, one
        # pass per SAE when several widths are trained one after another from a cache.
        tokens_per_second = len(groups) * cfg.training_tokens / max(train_seconds, 1e-9)
        results = LMTrainResults(
            saes=saes, training_saes=trained.saes, evals=evals, model=loaded, out_dir=out,
            results_path=out / RESULTS_FILENAME, plot_path=plot_path, train_seconds=train_seconds,
            tokens_per_second=tokens_per_second, hook_names={p.name: p.hook for p in plan}, token_source=source,
            dataset_rows_used=trained.rows_used,
        )
        write_results(results, {
            "model_name": loaded.model_name,
            "model_class_name": loaded.model_class_name,
            "dataset_path": source.dataset_path,
            "context_size": source.context_size,
            "training_tokens": cfg.training_tokens,
            "train_seconds": train_seconds,
            "tokens_per_second": tokens_per_second,
            "dataset_rows_used": trained.rows_used,
            "from_cache": None if cache_dir is None else str(cache_dir),
            "resumed_from": trained.resumed if len(plan) > 1 else trained.resumed[plan[0].name],
            "l0_unsettled": trained.unsettled_l0,  # the end-of-run warnings, kept with the results
            "config": asdict(cfg),
        })
        if wandb_on:
            log_results_to_wandb(results)
        return results
    finally:
        if wandb_on:
            finish_run()
