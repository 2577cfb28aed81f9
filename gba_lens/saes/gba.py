"""The GBA sparse autoencoder as a SAELens training architecture (key ``"gba"``).

The paper's SAE (Chen et al., arXiv:2506.14002), per neuron m:

    u_m = w_m . (s * x - b_pre)         pre-activation without bias (s: input scale, see below)
    y_m = u_m + b_m                     the neuron is active iff y_m > 0
    z_m = u_m * 1[y_m > 0]              JumpReLU gate (the paper's LLM runs)
        = (u_m + max(c_m, b_m)) * 1[y_m > 0]    with an offset c (``activation_bias``, ``decoder_refit``)
        = max(y_m, 0)                   ReLU gate (the paper's theory)
    x_hat = (sum_m z_m d_m + b_pre) / s

trained on reconstruction only, with NO sparsity penalty: the biases b get no gradient and are
moved by :class:`~gba_lens.saes.bias_adaptation.GroupBiasAdaptation` instead.

Weights: one side carries unit-norm directions, kept on the sphere by projection before every
step (the theory's spherical gradient descent). ``unit_norm="encoder"`` (default, both gates) keeps
the encoder directions w_m unit-norm, as in the paper's u_m = w_m . x, and leaves the decoder row
free (the paper's output scale a_m times a direction). This makes the bias thresholds mean the
same thing all through training: with unit-norm *decoder* rows and a free encoder, gradient descent
can shrink the encoder norms, so the pre-activations fall under biases set early in training; those
neurons fire below their group's target without ever being "dead" (the rule only raises the bias of
a neuron that never fires) and are lost to recovery. The ReLU gate needs it too: with no penalty and
free encoder norms, ReLU neurons grow until the clamp at -1 cannot silence them. ``"decoder"``
(SAELens's convention) is an option.

Input scale (:mod:`gba_lens.saes.input_scaling`): on its first training batch the SAE sets b_pre to the batch mean and s
so that s x - b_pre has unit mean norm (``per_token``, the default at residual-stream hooks: s x / |x| - b_pre).
With ``centre_inputs=False`` b_pre starts at 0; frozen there (``learn_pre_bias=False``) the SAE has
no pre-bias, which suits data with no offset: when the mean input is a mix of features (the paper's
toy) rather than an offset, a centred, trained b_pre absorbs part of them.

Export (:mod:`gba_lens.saes.gba_export`): the JumpReLU neuron is exactly SAELens's ``JumpReLUSAE``, the
ReLU neuron its ``StandardSAE``, so ``save_inference_model`` writes a plain SAELens SAE (cfg.json + safetensors) that
``sae_lens.SAE.load_from_disk`` loads without gba_lens; the GBA hyperparameters and the final group
targets travel in the config's metadata (``training_architecture_details``). A ``save_model`` folder (a SAELens
checkpoint) loads as the GBA SAE, its training state included (:mod:`gba_lens.saes.gba_loading`).

Training step: SAELens's dense one, or for wide SAEs the same step on the active latents only
(:mod:`gba_lens.saes.sparse_step`); ``encoder_regression`` adds a loss on every u_m (dense step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from numpy.typing import NDArray
from sae_lens import SAE, JumpReLUSAEConfig, SAEConfig, StandardSAEConfig, TrainingSAE, TrainingSAEConfig
from torch import nn
from typing_extensions import override

from gba_lens.compat import SAEMetadata, TrainCoefficientConfig, TrainStepInput, TrainStepOutput
from gba_lens.saes import coactivation
from gba_lens.saes.bias_adaptation import GroupBiasAdaptation
from gba_lens.saes.data_init import start_at_inputs
from gba_lens.saes.decoder_stability import DecoderStability
from gba_lens.saes.encoder_regression import encoder_regression_loss
from gba_lens.saes.firing_worth import FiringWorth
from gba_lens.saes.gba_export import firing_offset, inference_config, inference_state_dict, to_inference_state_dict
from gba_lens.saes.gba_loading import ARCHITECTURE, make_unsaved_buffers, match_offsets, own_dtypes, register
from gba_lens.saes.gba_metrics import logging_metrics
from gba_lens.saes.gba_options import GBAOptions
from gba_lens.saes.hook_defaults import resolve_hook_options, settle_hook_options
from gba_lens.saes.idle_groups import IdleGroups
from gba_lens.saes.input_scaling import first_batch_scaling, per_token_factor, undo_per_token
from gba_lens.saes.other_trainers import check_other_trainer
from gba_lens.saes.sparse_step import SparseStepPolicy, sparse_training_forward_pass
from gba_lens.saes.target_search import TargetSearch
from gba_lens.saes.valley_thresholds import ValleyThresholds


@dataclass
class GBATrainingSAEConfig(TrainingSAEConfig, GBAOptions):
    """Configuration of a GBA SAE. Defaults follow the paper (arXiv v1) except where noted."""

    gamma_minus: float = 0.01
    """Bias step for over-active neurons, in units of the neuron's peak pre-activation."""
    gamma_plus: float = 0.01
    """Bias step for dead neurons, in units of the group's mean positive peak."""
    dead_eps: float = 1e-6
    """A neuron whose window frequency is below this counts as dead (``never fired``)."""
    unit_norm: Literal["auto", "decoder", "encoder"] = "auto"
    """Which weights are kept unit-norm: ``auto`` = the encoder directions w_m (the paper's unit-norm
    w_m; keeps pre-activations on the scale of the [-1, 0] bias range); ``decoder`` = SAELens's
    unit-norm decoder rows (the encoder norm then drifts under the biases: worse recovery)."""
    centre_inputs: bool = True
    """Start b_pre at the data mean (estimated on the first batch). False: b_pre starts at 0 and
    ``unit_mean`` scales the raw inputs, for data with no offset such as the paper's X = H V."""
    decoder_init_norm: float | None = 1.0
    """Initial decoder row norm (directions start on the unit sphere, W_enc = W_dec^T)."""
    learn_pre_bias: bool | None = None
    """Train b_pre (None = auto: yes for JumpReLU, no for ReLU). With ReLU gating a learned b_pre
    gives every neuron a second, gradient-trained bias -w_m . b_pre that outgrows the [-1, 0]
    clamp (L0 ~ 45 of 128 on the recovery test); frozen at the data mean it recovers features."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    def __post_init__(self) -> None:
        if isinstance(self.metadata, dict):  # SAE.load_from_disk's generic SAEConfig.from_dict passes it unread
            self.metadata = SAEMetadata(**self.metadata)
        super().__post_init__()
        # The SAE's own config holds what it trains with: unset options resolved, so that its saved cfg and a
        # resumed run read concrete values (those that follow the hook once it is named: hook_defaults).
        self.resolve_unset_options()
        resolve_hook_options(self, named_only=True)
        self.check_gba_options(d_sae=self.d_sae)
        if self.unit_norm not in ("auto", "decoder", "encoder"):
            raise ValueError(f"unit_norm must be auto/decoder/encoder, got {self.unit_norm!r}")
        if self.encoder_init == "data" and self.input_norm == "none":  # the first batch's scale sets it
            raise ValueError("encoder_init='data' starts the neurons on the first batch: it needs "
                             "input_norm='unit_mean' or 'per_token'")
        if (self.encoder_regression or self.input_norm == "per_token") and self.normalize_activations != "none":
            raise ValueError(f"{'encoder_regression' if self.encoder_regression else 'input_norm=per_token'} needs "
                             f"normalize_activations='none', got {self.normalize_activations!r}")
        if self.input_norm == "per_token" and self.reshape_activations != "none":  # its norm is of the hook's shape
            raise ValueError(f"input_norm='per_token' needs reshape_activations='none', got {self.reshape_activations!r}")

    @property
    def trains_pre_bias(self) -> bool:
        return self.gating == "jumprelu" if self.learn_pre_bias is None else self.learn_pre_bias

    @property
    def constrained_side(self) -> Literal["decoder", "encoder"]:
        return "encoder" if self.unit_norm == "auto" else self.unit_norm

    @override
    def get_inference_config_class(self) -> type[SAEConfig]:
        return JumpReLUSAEConfig if self.gating == "jumprelu" else StandardSAEConfig


class GBATrainingSAE(TrainingSAE[GBATrainingSAEConfig]):
    """A GBA SAE trained by SAELens's ``SAETrainer`` (or ``LanguageModelSAETrainingRunner``).

    Everything GBA adds happens inside ``training_forward_pass``, like SAELens's BatchTopK threshold: the weights put
    back on the sphere, the forward pass, the pre-activations fed to the bias controller, the biases updated every T
    steps. So SAELens's unmodified trainer and runners train it, and its checkpoints carry the controller state.
    """

    b_enc: nn.Parameter
    input_scale: torch.Tensor

    def __init__(self, cfg: GBATrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.bias_adaptation = GroupBiasAdaptation(
            cfg.d_sae, n_groups=cfg.n_groups, highest_target=cfg.highest_target, lowest_target=cfg.lowest_target,
            gamma_minus=cfg.gamma_minus, gamma_plus=cfg.gamma_plus, dead_eps=cfg.dead_eps,
            targets=cfg.targets if cfg.n_groups > 1 else "geometric", target_l0=cfg.target_l0, find_l0=cfg.find_l0,
            target_search=TargetSearch(cfg.d_sae, cfg.d_in, self.device) if cfg.target_search else None,
            firing_worth=FiringWorth(cfg.d_sae, cfg.firing_worth, self.device) if cfg.firing_worth else None,
            idle_groups=IdleGroups(cfg.n_groups, self.device) if cfg.idle_groups else None,
            anneal_with_lr=cfg.anneal_with_lr, device=self.device)
        self.training_horizon: int | None = None  # the run's length in optimiser steps, which the trainers set
        self.valley_thresholds = ValleyThresholds(cfg.d_sae, self.device) if cfg.valley_thresholds else None
        self.b_dec.requires_grad_(cfg.trains_pre_bias)
        # 0 means "not estimated yet"; set from the first training batch.
        self.register_buffer("input_scale", torch.zeros((), dtype=torch.float32, device=self.device))
        # Active fraction of the last training step's entries (-1: none yet), for the sparse-step
        # policy; a buffer, so that a resumed run takes the same path as an uninterrupted one.
        self.register_buffer("step_density", torch.full((), -1.0, device=self.device))
        self.sparse_step_policy = SparseStepPolicy("off" if cfg.encoder_regression else cfg.sparse_step)  # dense u
        self.decoder_stability = DecoderStability(cfg.d_sae)  # a logging metric, not a module: not saved
        self._input_scale_ready = False
        self._token_factor: torch.Tensor | None = None  # per_token: 1 / |x| of the last inputs encoded
        self._rows_normalised = False  # per_token: inputs already divided by their norms (_reencode)
        self._batch_stats: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._window_empty = True  # no statistics accumulated since the last update
        self.setup()  # register the controller's module path with HookedRootModule

    @override
    def load_state_dict(self, state_dict: Any, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._input_scale_ready = False  # a loaded scale is re-checked on the next step
        if "step_density" not in state_dict:  # checkpoints written before the sparse step
            state_dict = {**state_dict, "step_density": torch.full((), -1.0)}
        match_offsets(self, state_dict)  # offsets fitted by decoder_refit, or unset until the hook decides
        result = super().load_state_dict(own_dtypes(self, state_dict), *args, **kwargs)
        make_unsaved_buffers(self)  # SAELens's load_from_disk builds on "meta" and assigns only the saved ones
        self._window_empty = bool(self.bias_adaptation.n_samples.item() == 0)
        return result

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()
        # The GBA bias b: a parameter (so SAELens's folding helpers and .to() handle it) that
        # gets no gradient and no optimiser state; only the controller moves it.
        self.b_enc = nn.Parameter(
            torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device), requires_grad=False
        )
        # ``activation_bias`` (unset: until the hook decides): the offset c of what a firing latent outputs.
        self.b_act = (nn.Parameter(torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device))
                      if self.cfg.activation_bias is not False else None)

    # ----------------------------------------------------------------------------- forward
    @property
    def _scale(self) -> torch.Tensor:
        s = self.input_scale
        return torch.where(s > 0, s, torch.ones_like(s)).to(self.dtype)

    @override
    def process_sae_in(self, sae_in: torch.Tensor) -> torch.Tensor:
        if self._per_token:
            self._token_factor = per_token_factor(sae_in).to(self.dtype)
        return super().process_sae_in(self._scaled(sae_in))

    @property
    def _per_token(self) -> bool:
        """Inputs are divided by their own norms here (``per_token``, not inside ``_reencode``)."""
        return self.cfg.input_norm == "per_token" and not self._rows_normalised

    def _per_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (rows of the batch last encoded) with ``per_token`` each row divided by its input's norm."""
        return x * self._token_factor if self._per_token else x

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` times the input scale s (``unit_mean``; ``per_token``: and 1 / |input| of the last inputs
        encoded, so that an error term is scaled as its input was), the first thing the encoder does."""
        return x if self.cfg.input_norm == "none" else self._per_input(x.to(self.dtype) * self._scale)

    def pre_activations(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """u = w . (s x - b_pre), the pre-activations without bias."""
        return self.process_sae_in(x) @ self.W_enc

    @override
    def encode_with_hidden_pre(
        self, x: Float[torch.Tensor, "... d_in"]
    ) -> tuple[Float[torch.Tensor, "... d_sae"], Float[torch.Tensor, "... d_sae"]]:
        u = self.pre_activations(x)
        y = self.hook_sae_acts_pre(u + self.b_enc)  # hidden_pre: active iff > 0
        # The controller's statistics while their inputs are in cache: the peak before the gate is
        # computed, the count right after it (after z, at 128 x 512, they took 40% longer).
        peak = self.batch_peak(y) if self.training else None
        gate = self.open_gate(y).to(u.dtype)
        if peak is not None:
            self._batch_stats = self.batch_fire_count(gate), peak, gate.numel() // gate.shape[-1]
        if self.cfg.gating == "relu":
            z = torch.relu(y)
        else:
            offset = self.activation_offset()
            z = u * gate if offset is None else (u + offset) * gate
        return self.hook_sae_acts_post(z), y

    def activation_offset(self) -> Float[torch.Tensor, " d_sae"] | None:
        """What a firing latent adds to u (``activation_bias``: :func:`firing_offset`); None without it."""
        return None if self.b_act is None else firing_offset(self.b_act, self.b_enc)

    @staticmethod
    def open_gate(y: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_sae"]:
        return y.detach().sign().clamp_(min=0)  # 1[y > 0]: a third of a cast bool mask's CPU time

    @staticmethod
    def batch_peak(y: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, " d_sae"]:
        """Per-neuron peak pre-activation of a batch (float32), for the bias controller."""
        return y.detach().reshape(-1, y.shape[-1]).amax(0).float()

    @staticmethod
    def batch_fire_count(gate: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, " d_sae"]:
        """Per-neuron firing count of a batch in float32 (a bf16 sum is exact only up to 256)."""
        return gate.detach().reshape(-1, gate.shape[-1]).sum(0, dtype=torch.float32)

    def combine_batch_statistics(
        self, fire_count: Float[torch.Tensor, " d_sae"], peak: Float[torch.Tensor, " d_sae"], n_samples: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The batch's controller statistics as the rule should see them: here as they are; data
        parallel training replaces this with a reduction over ranks (the global batch's)."""
        return fire_count, peak, n_samples

    def combine_batch_histogram(self, counts: Float[torch.Tensor, " entries"]) -> None:
        """Make the valley histograms' counts of a batch (in place) those the window should add:
        here they are; data parallel training replaces this with a sum over ranks (the global batch's)."""

    @torch.no_grad()
    def _reencode(self, feature_acts: Float[torch.Tensor, "rows d_sae"],
                  added: Float[torch.Tensor, "rows d_in"] | None = None) -> Float[torch.Tensor, "rows d_sae"]:
        """y = u + b of the reconstruction of ``feature_acts`` (plus ``added``, in the input's units, with
        ``per_token`` each row divided by its own input's norm: :meth:`_per_input`; no hooks' statistics,
        no gradient). ``feature_acts`` dense or sparse (COO: ``decode``'s product is then a sparse one)."""
        self._rows_normalised = self.cfg.input_norm == "per_token"  # the code's rows were divided already
        try:
            inputs = self.decode(feature_acts.to(self.W_dec.dtype))
            return self.pre_activations(inputs if added is None else inputs + added) + self.b_enc
        finally:
            self._rows_normalised = False

    @override
    def decode(self, feature_acts: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_in"]:
        return self.finish_decode(feature_acts @ self.W_dec)

    def finish_decode(self, decoded: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_in"]:
        """From z W_dec to the reconstruction: SAELens's ``TrainingSAE.decode`` after its matmul
        (+ b_dec, hook, output normalisation, reshape), then undo the input scale. Shared by the
        dense decode and the sparse step, which computes z W_dec itself."""
        sae_out = self.hook_sae_recons(decoded + self.b_dec)
        sae_out = self.reshape_fn_out(self.run_time_activation_norm_fn_out(sae_out), self.d_head)
        if self.cfg.input_norm != "none":
            sae_out = sae_out / self._scale
        return undo_per_token(sae_out, self._token_factor) if self._per_token else sae_out

    @override
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {}  # no sparsity penalty: sparsity comes from the biases alone

    @override
    def calculate_aux_loss(self, step_input: TrainStepInput, feature_acts: torch.Tensor, hidden_pre: torch.Tensor,
                           sae_out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Only ``encoder_regression`` (:mod:`gba_lens.saes.encoder_regression`), when its weight is set."""
        if not self.cfg.encoder_regression:
            return {}
        residual = self._scaled(step_input.sae_in - sae_out.detach())  # in the space u reads (b_pre cancels)
        return {"encoder_regression": encoder_regression_loss(
            hidden_pre - self.b_enc, feature_acts, residual, self.W_dec, self.cfg.encoder_regression)}

    # ---------------------------------------------------------------------------- training
    @torch.no_grad()
    def initialize_from_batch(self, batch: Float[torch.Tensor, "batch d_in"]) -> None:
        """Set b_pre to the batch mean (``centre_inputs``, else 0) and s so that the inputs
        s x - b_pre have unit mean norm (:func:`first_batch_scaling`); ``encoder_init="data"``: the
        neurons start at its inputs. The options that follow the hook resolve first, at the latest."""
        settle_hook_options(self)
        scale, pre_bias, inputs = first_batch_scaling(batch, self.cfg.centre_inputs, self.cfg.input_norm == "per_token")
        self.input_scale.fill_(scale)
        self.b_dec.data.copy_(pre_bias.to(self.b_dec.dtype))
        if self.cfg.encoder_init == "data":  # the neurons start at inputs as the encoder sees them
            start_at_inputs(inputs, self.W_enc.data, self.W_dec.data)

    @torch.no_grad()
    def project_weights(self) -> None:
        """Put the constrained directions back on the unit sphere."""
        if self.cfg.constrained_side == "decoder":
            self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp(min=1e-8)
        else:
            # Column norms of the [d_in, d_sae] encoder: sum of squares + rsqrt is ~7x faster on
            # CPU than ``norm(dim=0)`` (a strided reduction) at 512 x 4096.
            w = self.W_enc.data
            w.mul_((w * w).sum(0, keepdim=True).clamp_(min=1e-16).rsqrt_())

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        if self.training_horizon is None:  # not gba_lens's trainers (they set it): SAELens's own, say
            check_other_trainer(self)
        if not self._input_scale_ready:  # checked once, not every step (a GPU sync)
            settle_hook_options(self)  # the options that follow the hook, at the latest (SAELens's own trainer)
            if self.cfg.input_norm != "none" and self.input_scale.item() == 0:
                self.initialize_from_batch(step_input.sae_in)
            self._input_scale_ready = True
        self.project_weights()
        if self.sparse_step_policy.applies(self, step_input.sae_in):
            output, batch_stats = sparse_training_forward_pass(self, step_input)
        else:
            output = super().training_forward_pass(step_input)
            batch_stats, self._batch_stats = self._batch_stats, None
            if batch_stats is None:  # encoded in eval mode: no statistics were cached
                y = output.hidden_pre
                batch_stats = self.batch_fire_count(self.open_gate(y)), self.batch_peak(y), y.numel() // y.shape[-1]
        rows_peak = batch_stats[1]  # this rank's, before the combination
        batch_stats = self.combine_batch_statistics(*batch_stats)
        self.step_density.copy_(batch_stats[0].sum() / (batch_stats[2] * self.cfg.d_sae))

        valley = self.valley_thresholds
        if valley is not None:  # u of this batch, before the rule moves the biases
            valley.observe(output.hidden_pre.reshape(-1, self.cfg.d_sae), self.b_enc, batch_stats[2], batch_stats[1],
                           self.combine_batch_histogram, rows_peak)
        controller = self.bias_adaptation
        log = step_input.is_logging_step
        if self.cfg.update_interval == 1 and self._window_empty:
            # T = 1: the window is this batch; apply the rule to its statistics directly.
            window = controller.apply_rule(self.b_enc.data, *batch_stats, with_stats=log)
        else:
            controller.accumulate(*batch_stats)
            self._window_empty = (step_input.n_training_steps + 1) % self.cfg.update_interval == 0
            window = controller.update(self.b_enc.data, with_stats=log) if self._window_empty else {}
        if window:
            output.metrics["gba/over_active_fraction"] = window["over_active_fraction"]
            output.metrics["gba/window_dead_fraction"] = window["dead_fraction"]
        if valley is not None and valley.window_full:
            self.reduce_window_statistics(valley)
            found = valley.apply(self.b_enc.data, controller.bias_min, controller.bias_max, controller.rate)
            controller.follow_valleys(found.has_valley, found.frequency)
            if log:
                output.metrics["gba/valley_fraction"] = found.fraction
        balance = controller.coactivation  # find_l0: the target scale follows the co-activation ratio
        if balance is not None and balance.due(step_input.n_training_steps):
            balance.observe(output.feature_acts, self.W_dec, batch_stats[0] > 0, step_input.n_training_steps,
                            output.hidden_pre, self.b_enc, self._reencode, self._per_input(output.sae_in),
                            self._per_input(output.sae_out))
            self.reduce_window_statistics(balance)
            ratio = balance.ratio()
            if ratio is not None:
                controller.l0_control.follow(ratio, coactivation.GAIN)  # read now: a study may set it
        scaled_error = lambda: self._scaled(output.sae_in - output.sae_out.detach())  # computed where a rule measures
        worth = controller.firing_worth  # the targets of latents whose firings reconstruct little fall
        if worth is not None and worth.due(step_input.n_training_steps, self.training_horizon):
            worth.observe(output.feature_acts, self.W_dec, scaled_error())
            self.reduce_window_statistics(worth)
            worth.update()
        idle = controller.idle_groups  # once: the lowest groups move up when their harm ends in nothing
        if idle is not None:
            idle.step(step_input.n_training_steps, self.training_horizon, controller, output.feature_acts, self.W_dec,
                      scaled_error, self.reduce_window_statistics)
        search = controller.target_search
        if search is not None and search.due(step_input.n_training_steps):
            search.check(self.W_dec, controller.target, step_input.n_training_steps, self.training_horizon)

        if step_input.is_logging_step:
            output.metrics.update(logging_metrics(self, output))
        return output

    def reduce_window_statistics(self, statistics: nn.Module) -> None:
        """Combine a window's (or a co-activation check's) statistics across data-parallel ranks:
        nothing to do in one process (data-parallel training replaces this with an all-reduce)."""

    @override
    @torch.no_grad()
    def log_histograms(self) -> dict[str, NDArray[Any]]:
        return {
            **super().log_histograms(),
            "weights/gba_bias": self.b_enc.detach().float().cpu().numpy(),
            "weights/gba_log10_frequency": np.log10(self.bias_adaptation.frequency.detach().float().cpu().numpy() + 1e-10),
        }

    # ------------------------------------------------------------------------------ export
    @override
    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_saving_inference(state_dict)
        to_inference_state_dict(state_dict, self.cfg.gating, self.cfg.input_norm)

    def inference_cfg_dict(self) -> dict[str, Any]:
        """SAELens's inference config with the final group targets (:func:`inference_config`)."""
        return inference_config(self)

    @override
    def save_inference_model(self, path: str | Path) -> tuple[Path, Path]:
        weights_path, cfg_path = super().save_inference_model(path)
        cfg_path.write_text(json.dumps(self.inference_cfg_dict()))  # SAELens's, plus the final targets
        return weights_path, cfg_path

    def to_inference_sae(self) -> SAE[Any]:
        """The equivalent plain SAELens SAE (``JumpReLUSAE`` or ``StandardSAE``), in memory."""
        sae = SAE.from_dict(self.inference_cfg_dict())
        sae.load_state_dict(inference_state_dict(self))
        return sae


register(GBATrainingSAE, GBATrainingSAEConfig)  # "gba" in SAELens's registries (gba_loading)
