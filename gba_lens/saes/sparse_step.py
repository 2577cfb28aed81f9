"""GBA's training step on the latents that fire: one dense matmul instead of about six.

The dense step of an SAE costs six [batch x d_in x d_sae] matmuls: the encoder forward
u = x_c W_enc, the decode z W_dec, and four in the backward (dL/dz, dL/dW_dec, dL/du's weight
gradient dL/dW_enc, and dL/dx_c for b_dec). With GBA's gate only the active entries of z are
non-zero, and the gradient reaching u is zero wherever a latent is inactive (z = u * 1[u + b > 0]
with a bias that gets no gradient, or z = relu(u + b): dz/du = 1 on the active entries, 0 elsewhere),
so everything but the encoder forward only needs the nnz active (sample, latent) pairs:

    decode         x_hat = Z W_dec                       Z sparse [batch, d_sae] (CSR)
    dL/dz          values of (g W_dec^T) on Z's pattern   sampled dense-dense product (SDDMM)
    dL/dW_dec      Z^T g                                  sparse x dense
    dL/dW_enc      x_c^T G                                G = dL/du (Z's pattern); dense x sparse
    dL/db_dec      -W_enc (sum over the batch of G)       a matrix-vector product (see below)
    dL/dc          sum over the batch of G                the activation offsets (``activation_bias``)

each O(nnz * d_in) instead of O(batch * d_in * d_sae). The encoder forward stays dense: every
pre-activation is needed, to know which latents fire and for the bias controller's peak statistic.
Built from torch's own sparse ops (CSR ``sparse.mm`` / ``addmm_``, ``sparse.sampled_addmm``) so the
same code runs on CPU and GPU.

Why b_dec needs only a matrix-vector product: SAELens's ``process_sae_in`` ends with
``sae_in - b_dec * apply_b_dec_to_input`` and has no other parameter, so the encoder-side gradient
of b_dec is -sum_batch dL/dx_c = -W_enc (sum_batch G). The step therefore takes the centred input
as a value (no graph) and b_dec as a separate input that only receives this gradient; the
decoder-side gradient (x_hat = Z W_dec + b_dec) is left to autograd.

:class:`SparseStepPolicy` decides when this path is used: by width, and by the fraction of
active entries measured on the previous step (the sparse step's cost grows with nnz, the dense
step's does not), with thresholds measured per device type (:data:`AUTO_THRESHOLDS`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from gba_lens.compat import TrainStepInput, TrainStepOutput

SparseStepMode = Literal["auto", "on", "off"]
SPARSE_STEP_MODES: tuple[str, ...] = ("auto", "on", "off")

AUTO_THRESHOLDS: dict[str, tuple[int, float]] = {"cpu": (1024, 0.05)}
"""Device type -> (smallest width, largest active fraction) at which ``sparse_step="auto"`` takes
the sparse step: inside the region where it was measured to beat the dense step, with a margin (CPU:
from width 512 at L0 20, up to an active fraction of ~0.065 at width 16,384; see
``benchmarks/bench_sparse_step.py`` and docs/experiments/sparse_step.md). A device not listed (GPU:
not measured yet) keeps the dense step under "auto"; ``sparse_step="on"`` still forces it."""


@dataclass(frozen=True)
class SparseStepPolicy:
    """When GBA's training step runs on the active latents only.

    ``mode="on"`` / ``"off"`` force it; ``"auto"`` uses it where ``thresholds`` has the device
    type, for SAEs at least that wide whose previous step had at most that fraction of its
    (sample, latent) entries active, and never under autocast (the sparse products run in the
    SAE's own dtype)."""

    mode: SparseStepMode = "auto"
    thresholds: dict[str, tuple[int, float]] = field(default_factory=lambda: dict(AUTO_THRESHOLDS))

    def __post_init__(self) -> None:
        if self.mode not in SPARSE_STEP_MODES:
            raise ValueError(f"sparse_step must be one of {SPARSE_STEP_MODES}, got {self.mode!r}")

    def use_sparse(self, d_sae: int, previous_density: float, device_type: str = "cpu") -> bool:
        """``previous_density``: active fraction of the last step's entries (< 0: not measured yet)."""
        if self.mode != "auto":
            return self.mode == "on"
        limits = self.thresholds.get(device_type)
        if limits is None or torch.is_autocast_enabled() or d_sae < limits[0]:
            return False
        return 0.0 <= previous_density <= limits[1]

    def applies(self, sae: Any, sae_in: torch.Tensor) -> bool:
        """Whether ``sae`` (a GBA training SAE) takes the sparse step on this batch. The step
        computes its activations itself, so it is skipped while a hook is attached to the SAE (and
        for inputs that are not [batch, d_in]); with ``mode="on"`` that is an error instead."""
        device_type = sae.W_enc.device.type
        limits = self.thresholds.get(device_type)
        if self.mode == "off" or (self.mode == "auto" and (limits is None or sae.cfg.d_sae < limits[0])):
            return False  # decided without reading step_density (a GPU sync)
        if not self.use_sparse(sae.cfg.d_sae, float(sae.step_density.item()), device_type):
            return False
        hooked = [name for name, hook in sae.hook_dict.items() if hook._forward_hooks]
        problem = (f"hooks are attached to {', '.join(hooked)}" if hooked
                   else None if sae_in.ndim == 2 else f"the input has shape {tuple(sae_in.shape)}, not [batch, d_in]")
        if problem is not None and self.mode == "on":
            raise ValueError(f"sparse_step='on' cannot run: {problem} (use sparse_step='auto' or 'off')")
        return problem is None


@dataclass
class SparseStepResult:
    """What one sparse encode-decode returns besides the differentiable reconstruction."""

    decoded: Float[torch.Tensor, "batch d_in"]
    """Z W_dec (no b_dec): gradients reach W_enc, W_dec and b_dec through it."""
    hidden_pre: Float[torch.Tensor, "batch d_sae"]
    """y = u + b, as the dense path's ``hidden_pre``."""
    feature_acts: torch.Tensor
    """The active entries of z as a coalesced COO [batch, d_sae] tensor (SAELens's trainer reads
    sparse feature activations, as for its TopK SAE's ``use_sparse_activations``)."""
    fire_count: Float[torch.Tensor, " d_sae"]
    """Samples of the batch in which each latent fired (float32)."""
    peak: Float[torch.Tensor, " d_sae"]
    """Each latent's largest y over the batch."""
    n_active: int
    """nnz: active (sample, latent) pairs in the batch."""


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns once per process that CSR support is "beta"
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _compressed(index: torch.Tensor, size: int) -> torch.Tensor:
    """CSR row pointers [size + 1] of sorted row indices."""
    counts = torch.bincount(index, minlength=size)
    return torch.cat((counts.new_zeros(1), counts.cumsum(0)))


_DENSE_TIMES_CSR_FAILS: set[str] = set()


def _dense_times_csr(dense: torch.Tensor, csr: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """dense @ csr, written into a fresh tensor shaped and laid out like ``like``. Where torch has
    no dense x CSR kernel for the device, (csr^T @ dense^T)^T: the same values, one more copy."""
    device = str(csr.device.type)
    if device not in _DENSE_TIMES_CSR_FAILS:
        try:
            return like.new_empty(like.shape).addmm_(dense, csr, beta=0.0)  # beta 0: never reads it
        except (NotImplementedError, RuntimeError):
            _DENSE_TIMES_CSR_FAILS.add(device)
    return torch.sparse.mm(csr.t().to_sparse_csr(), dense.t()).t().contiguous()


class _SparseGatedAutoencode(torch.autograd.Function):
    """x_c -> Z W_dec with Z the gated activations, differentiable in W_enc, W_dec and b_dec."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x_centred: torch.Tensor,
        W_enc: torch.Tensor,
        W_dec: torch.Tensor,
        bias: torch.Tensor,
        b_dec: torch.Tensor | None,
        b_dec_subtracted: bool,
        relu_gate: bool,
        offset: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        batch, d_sae = x_centred.shape[0], W_enc.shape[1]
        u = x_centred @ W_enc
        # u > -b is exactly fl(u + b) > 0 (a rounded sum keeps its sign), without allocating y.
        rows, cols = (u > -bias).nonzero(as_tuple=True)
        values = u[rows, cols]
        if relu_gate:
            values = values + bias[cols]  # relu(y) = fl(u + b) on the active entries
        elif offset is not None:  # activation_bias: u + max(c, b) on the active entries
            values = values + offset[cols]
        # max_i fl(u_i + b) = fl(max_i u_i + b): rounding is monotonic, so this equals y.amax(0).
        peak = u.amax(0) + bias
        crow = _compressed(rows, batch)
        decoded = torch.sparse.mm(_csr(crow, cols, values, (batch, d_sae)), W_dec)
        ctx.save_for_backward(x_centred, W_enc, W_dec, crow, rows, cols, values)
        ctx.has_b_dec = b_dec is not None and b_dec_subtracted
        hidden_pre = u.add_(bias)  # y, in u's storage (u is not needed any more)
        fire_count = torch.bincount(cols, minlength=d_sae).to(torch.float32)
        ctx.mark_non_differentiable(hidden_pre, rows, cols, values, fire_count, peak)
        ctx.set_materialize_grads(False)  # no [batch, d_sae] zeros for the outputs without a gradient
        return decoded, hidden_pre, rows, cols, values, fire_count, peak

    @staticmethod
    def backward(ctx: Any, grad_decoded: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        if grad_decoded is None:  # the reconstruction did not reach the loss
            return (None,) * 8
        x_centred, W_enc, W_dec, crow, rows, cols, values = ctx.saved_tensors
        batch, d_sae = x_centred.shape[0], W_enc.shape[1]
        grad = grad_decoded.contiguous()
        pattern = _csr(crow, cols, values, (batch, d_sae))
        # dL/dz on the active entries = dL/du there (the gate's derivative is 1 where it is open).
        grad_u = torch.sparse.sampled_addmm(pattern, grad, W_dec.t(), beta=0.0).values()
        grad_W_dec = grad_W_enc = grad_b_dec = grad_offset = per_latent = None
        b_dec_grad, offset_grad = ctx.has_b_dec and ctx.needs_input_grad[4], ctx.needs_input_grad[7]
        if ctx.needs_input_grad[2]:  # Z^T g, with Z^T's entries ordered by latent
            by_latent = torch.argsort(cols, stable=True)  # stable: rows stay sorted within a latent
            z_t = _csr(_compressed(cols, d_sae), rows[by_latent], values[by_latent], (d_sae, batch))
            grad_W_dec = W_dec.new_empty(W_dec.shape).addmm_(z_t, grad, beta=0.0)
        if ctx.needs_input_grad[1]:  # x_c^T G, straight into W_enc's [d_in, d_sae] layout
            grad_W_enc = _dense_times_csr(x_centred.t(), _csr(crow, cols, grad_u, (batch, d_sae)), W_enc)
        if b_dec_grad or offset_grad:  # sum over the batch of G
            per_latent = torch.zeros(d_sae, dtype=grad_u.dtype, device=grad_u.device).index_add_(0, cols, grad_u)
        if b_dec_grad:
            grad_b_dec = -(W_enc @ per_latent)
        if offset_grad:  # dz/dc = 1 where the gate is open
            grad_offset = per_latent
        return None, grad_W_enc, grad_W_dec, None, grad_b_dec, None, None, grad_offset


def sparse_gated_autoencode(
    x_centred: Float[torch.Tensor, "batch d_in"],
    W_enc: Float[torch.Tensor, "d_in d_sae"],
    W_dec: Float[torch.Tensor, "d_sae d_in"],
    bias: Float[torch.Tensor, " d_sae"],
    b_dec: Float[torch.Tensor, " d_in"] | None = None,
    *,
    b_dec_subtracted: bool = True,
    gating: Literal["jumprelu", "relu"] = "jumprelu",
    offset: Float[torch.Tensor, " d_sae"] | None = None,
) -> SparseStepResult:
    """GBA's gated encode and decode (without b_dec) computed on the active entries only.

    ``x_centred`` is the encoder input x_c = x - b_dec (used as a value: its graph is not
    followed); pass ``b_dec`` to give b_dec the gradient it gets through x_c when
    ``b_dec_subtracted`` (SAELens's ``apply_b_dec_to_input``). ``bias`` gets no gradient. ``offset``
    (JumpReLU gate only): added to every active entry's output, and given its gradient.
    """
    if x_centred.ndim != 2:
        raise ValueError(f"the sparse step takes a [batch, d_in] input, got shape {tuple(x_centred.shape)}")
    if gating not in ("jumprelu", "relu"):
        raise ValueError(f"gating must be 'jumprelu' or 'relu', got {gating!r}")
    with torch.autocast(x_centred.device.type, enabled=False):
        decoded, hidden_pre, rows, cols, values, fire_count, peak = _SparseGatedAutoencode.apply(
            x_centred.detach().to(W_enc.dtype), W_enc, W_dec, bias.detach(), b_dec, b_dec_subtracted,
            gating == "relu", offset,
        )
    feature_acts = torch.sparse_coo_tensor(
        torch.stack((rows, cols)), values, hidden_pre.shape, is_coalesced=True, check_invariants=False
    )
    return SparseStepResult(decoded, hidden_pre, feature_acts, fire_count, peak, int(rows.numel()))


def active_latent_index(feature_acts: torch.Tensor) -> Int[torch.Tensor, " nnz"]:
    """The latent index of every active entry of dense or sparse (COO) feature activations."""
    if feature_acts.is_sparse:
        return feature_acts.coalesce().indices()[-1]
    return (feature_acts.reshape(-1, feature_acts.shape[-1]) != 0).nonzero(as_tuple=True)[1]


def sparse_training_forward_pass(
    sae: Any, step_input: TrainStepInput
) -> tuple[TrainStepOutput, tuple[torch.Tensor, torch.Tensor, int]]:
    """SAELens's ``TrainingSAE.training_forward_pass`` for a GBA SAE (MSE loss; GBA has no aux
    loss) with the encode-decode of :func:`sparse_gated_autoencode`. Also returns the batch's
    bias-controller statistics (fire count, peak, samples), computed from the active entries."""
    sae_in = step_input.sae_in
    with torch.no_grad():  # x - b_dec as a value; b_dec's encoder-side gradient comes from the step
        x_centred = sae.process_sae_in(sae_in)
    step = sparse_gated_autoencode(
        x_centred, sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec if sae.b_dec.requires_grad else None,
        b_dec_subtracted=bool(sae.cfg.apply_b_dec_to_input), gating=sae.cfg.gating,
        offset=sae.activation_offset(),  # None with the ReLU gate (activation_bias needs JumpReLU)
    )
    sae_out = sae.finish_decode(step.decoded)
    mse_loss = sae.mse_loss_fn(sae_out, sae_in).sum(dim=-1).mean()
    output = TrainStepOutput(sae_in=sae_in, sae_out=sae_out, feature_acts=step.feature_acts,
                             hidden_pre=step.hidden_pre, loss=mse_loss, losses={"mse_loss": mse_loss})
    return output, (step.fire_count, step.peak, sae_in.shape[0])
