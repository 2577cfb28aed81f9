"""GBA's sparse training step: the dense step's loss, gradients and controller statistics from the
active entries only; the policy that picks it; a full training run that ends where the dense one
does; the inference and error-term paths untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from gba_lens.data.batches import TensorBatches
from gba_lens.saes import sparse_step
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.sparse_step import (
    AUTO_THRESHOLDS,
    SparseStepPolicy,
    active_latent_index,
    sparse_gated_autoencode,
)
from gba_lens.training.train import TrainConfig, run_settings, train_sae


def _pair(d_in, d_sae, seed=0, **options):
    """A GBA SAE with the dense step and an identical one with the sparse step, biases set so that
    a few percent of the entries fire (random starts: a data start would align every latent with the
    first batch, and most would fire)."""
    torch.manual_seed(seed)
    options = {"encoder_init": "random", **options}
    dense = GBATrainingSAE(GBATrainingSAEConfig(d_in=d_in, d_sae=d_sae, sparse_step="off", **options))
    with torch.no_grad():
        dense.b_enc.uniform_(-0.6, -0.25)
        dense.W_dec.mul_(torch.rand(d_sae, 1) + 0.5)  # decoder rows of different norms
        if dense.b_act is not None:  # activation offsets on both sides of the biases: max(c, b) picks either
            dense.b_act.uniform_(-0.5, 0.1)
    sparse = copy.deepcopy(dense)
    sparse.sparse_step_policy = SparseStepPolicy("on")
    return dense, sparse


def _inputs(n, d_in, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g) * 2 + torch.linspace(-1, 1, d_in)


@pytest.mark.parametrize("d_sae", [64, 1024, 4096])
@pytest.mark.parametrize("gating, activation_bias, input_norm", [
    ("jumprelu", False, "unit_mean"), ("jumprelu", True, "unit_mean"), ("relu", False, "unit_mean"),
    ("jumprelu", True, "per_token")])
@pytest.mark.parametrize("learn_pre_bias", [True, False])
def test_sparse_step_gives_the_dense_loss_gradients_and_controller_statistics(
        step_input, d_sae, gating, activation_bias, input_norm, learn_pre_bias):
    dense, sparse = _pair(24, d_sae, gating=gating, learn_pre_bias=learn_pre_bias, activation_bias=activation_bias,
                          input_norm=input_norm)
    x = _inputs(200, 24)
    outputs = []
    for sae in (dense, sparse):
        out = sae.training_forward_pass(step_input(x))
        out.loss.backward()
        outputs.append(out)
    d_out, s_out = outputs
    assert not d_out.feature_acts.is_sparse and s_out.feature_acts.is_sparse  # each took its path
    density = sparse.step_density.item()
    assert 0.005 < density < 0.2  # sparse, but with plenty of active entries
    assert torch.allclose(d_out.loss, s_out.loss, rtol=1e-6)
    assert torch.equal(d_out.feature_acts, s_out.feature_acts.to_dense())
    assert torch.equal(d_out.hidden_pre, s_out.hidden_pre)
    # the two paths sum a row's active products in different orders: float32 rounding, which on some CPUs reaches
    # 1.5e-5 of an output at 4,096 latents, bounded here by 1e-5 of the largest output; a wrong product is O(1)
    assert torch.allclose(d_out.sae_out, s_out.sae_out, rtol=1e-5, atol=1e-5 * float(d_out.sae_out.abs().max()))
    trained = {name for name, p in dense.named_parameters() if p.requires_grad}
    offset = {"b_act"} if activation_bias else set()
    assert trained == ({"W_enc", "W_dec", "b_dec"} if learn_pre_bias else {"W_enc", "W_dec"}) | offset
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters()):
        if not p.requires_grad:
            assert q.grad is None, name
            continue
        scale = p.grad.abs().max()
        assert scale > 0, name
        assert (p.grad - q.grad).abs().max() <= 1e-5 * scale, name
    # the bias controller saw the same statistics, so it moved the biases identically
    assert torch.equal(dense.b_enc, sparse.b_enc)
    assert not torch.equal(dense.b_enc, _pair(24, d_sae, gating=gating, learn_pre_bias=learn_pre_bias,
                                              activation_bias=activation_bias, input_norm=input_norm)[0].b_enc)
    for key in ("gba/l0", "gba/over_active_fraction", "gba/window_dead_fraction"):
        assert torch.equal(torch.as_tensor(d_out.metrics[key]), torch.as_tensor(s_out.metrics[key])), key


def test_statistics_over_a_window_match_with_update_interval(step_input):
    dense, sparse = _pair(16, 512, update_interval=3)
    for step in range(2):  # the window stays open: statistics accumulate in the controller
        for sae in (dense, sparse):
            sae.training_forward_pass(step_input(_inputs(128, 16, seed=step), step=step))
    for key in ("fire_count", "peak", "n_samples"):
        a, b = getattr(dense.bias_adaptation, key), getattr(sparse.bias_adaptation, key)
        assert torch.equal(a, b), key
    assert dense.bias_adaptation.fire_count.sum() > 0


def test_the_function_on_its_own_matches_autograd_of_the_dense_formula():
    g = torch.Generator().manual_seed(3)
    x, w_enc = torch.randn(50, 8, generator=g), torch.randn(8, 300, generator=g, requires_grad=True)
    w_dec, b_dec = torch.randn(300, 8, generator=g, requires_grad=True), torch.randn(8, generator=g, requires_grad=True)
    bias = -torch.rand(300, generator=g) * 3
    for gating in ("jumprelu", "relu"):
        x_c = x - b_dec
        u = x_c @ w_enc
        z = u * (u + bias > 0) if gating == "jumprelu" else torch.relu(u + bias)
        target = torch.randn(50, 8, generator=g)
        ((z @ w_dec - target) ** 2).sum().backward()
        expected = [t.grad.clone() for t in (w_enc, w_dec, b_dec)]
        for t in (w_enc, w_dec, b_dec):
            t.grad = None
        step = sparse_gated_autoencode(x_c.detach(), w_enc, w_dec, bias, b_dec, gating=gating)
        ((step.decoded - target) ** 2).sum().backward()
        for name, t, want in zip(("W_enc", "W_dec", "b_dec"), (w_enc, w_dec, b_dec), expected):
            assert (t.grad - want).abs().max() <= 1e-5 * want.abs().max(), (gating, name)
            t.grad = None
        assert step.n_active == int((u + bias > 0).sum())
        assert torch.equal(step.fire_count, (u + bias > 0).float().sum(0))
        assert torch.equal(step.peak, (u + bias).amax(0).detach())
        assert torch.equal(active_latent_index(step.feature_acts), active_latent_index(z.detach()))


def test_a_batch_where_nothing_fires_gives_zero_gradients_not_an_error():
    w_enc = torch.randn(4, 32, requires_grad=True)
    w_dec = torch.randn(32, 4, requires_grad=True)
    step = sparse_gated_autoencode(torch.randn(10, 4), w_enc, w_dec, torch.full((32,), -100.0))
    step.decoded.sum().backward()
    assert step.n_active == 0 and step.decoded.abs().max() == 0
    assert w_enc.grad.abs().max() == 0 and w_dec.grad.abs().max() == 0


def test_training_run_with_the_sparse_step_reproduces_the_dense_run(monkeypatch):
    calls = []
    real = sparse_step.sparse_gated_autoencode
    monkeypatch.setattr(sparse_step, "sparse_gated_autoencode", lambda *a, **k: calls.append(1) or real(*a, **k))
    acts = _inputs(8192, 16, seed=7).relu() * 2
    saes = {}
    for mode in ("off", "on"):
        torch.manual_seed(0)
        # decoder_refit off: the steps are compared, not what a refit after them makes of them
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=16, d_sae=1024, sparse_step=mode, highest_target=0.05,
                                                  lowest_target=0.002, decoder_refit=False))
        train_sae(sae, TensorBatches(acts, 128, seed=0), TrainConfig(total_samples=100 * 128, batch_size=128,
                                                                     lr=3e-3, device="cpu"))
        saes[mode] = sae
    assert len(calls) == 100  # every step of the "on" run was sparse, none of the "off" run
    dense, sparse = saes["off"], saes["on"]
    assert 0 < sparse.step_density.item() < 0.25
    for key, value in dense.state_dict().items():
        if key.endswith("histogram"):  # counts: float rounding moves an entry across a bin edge at most rarely
            assert (value - sparse.state_dict()[key]).abs().sum() <= 1e-4 * value.sum(), key
            continue
        # atol 1e-3 (weights of size 0.1-0.5): Adam turns a rounding-sized difference in a small gradient
        # into a step of the learning rate's size; after 100 steps a few weights part by up to ~5e-4
        # (with one torch thread; 1e-4 held with two).
        assert torch.allclose(value, sparse.state_dict()[key], rtol=1e-3, atol=1e-3), key
    assert (dense.b_enc < 0).any()  # the biases moved: the comparison is not trivial
    x = acts[:512]
    assert torch.allclose(dense(x), sparse(x), rtol=1e-3, atol=1e-4)


def test_inference_and_error_term_paths_do_not_depend_on_the_option(step_input):
    dense, sparse = _pair(16, 512)
    x = _inputs(64, 16)
    for sae in (dense, sparse):  # one sparse/dense training step each, then inference
        sae.training_forward_pass(step_input(x))
        sae.eval()
    sparse.load_state_dict(dense.state_dict())
    assert torch.equal(dense(x), sparse(x))
    assert torch.equal(dense.encode(x), sparse.encode(x))
    for sae in (dense, sparse):
        sae.use_error_term = True
    assert torch.allclose(sparse(x), x, atol=1e-5)  # the error term restores the input exactly
    inference_d, inference_s = dense.to_inference_sae(), sparse.to_inference_sae()
    assert "step_density" not in inference_s.state_dict()
    assert torch.equal(inference_d.encode(x), inference_s.encode(x))


SPARSE_MIN_WIDTH, SPARSE_MAX_DENSITY = AUTO_THRESHOLDS["cpu"]


def test_policy_picks_the_sparse_step_by_width_and_measured_density():
    auto = SparseStepPolicy()
    assert auto.use_sparse(SPARSE_MIN_WIDTH, SPARSE_MAX_DENSITY)
    assert not auto.use_sparse(SPARSE_MIN_WIDTH - 1, 0.001)  # narrow: dense
    assert not auto.use_sparse(SPARSE_MIN_WIDTH, SPARSE_MAX_DENSITY * 1.01)  # too many active
    assert not auto.use_sparse(SPARSE_MIN_WIDTH, -1.0)  # nothing measured yet
    assert SparseStepPolicy("on").use_sparse(8, 0.9) and not SparseStepPolicy("off").use_sparse(10**6, 0.0)
    assert not auto.use_sparse(10**6, 0.0, device_type="cuda")  # not measured there: dense
    assert SparseStepPolicy("on").use_sparse(8, 0.9, device_type="cuda")
    with pytest.raises(ValueError, match="sparse_step must be one of"):
        SparseStepPolicy("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sparse_step must be one of"):
        GBATrainingSAEConfig(d_in=4, d_sae=8, sparse_step="yes")  # type: ignore[arg-type]


def test_auto_switches_to_the_sparse_step_once_few_latents_fire(step_input):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=16, d_sae=SPARSE_MIN_WIDTH))
    x = _inputs(64, 16)
    first = sae.training_forward_pass(step_input(x))
    assert not first.feature_acts.is_sparse  # nothing measured yet: dense
    assert sae.step_density.item() > SPARSE_MAX_DENSITY  # biases at 0: about half fire
    with torch.no_grad():
        sae.b_enc.fill_(-0.8)
    sae.training_forward_pass(step_input(x, step=1))  # measures the new density (dense step)
    assert 0 <= sae.step_density.item() <= SPARSE_MAX_DENSITY
    assert sae.training_forward_pass(step_input(x, step=2)).feature_acts.is_sparse


def test_step_density_travels_with_checkpoints_and_old_checkpoints_still_load(step_input):
    dense, sparse = _pair(16, 512)
    sparse.training_forward_pass(step_input(_inputs(64, 16)))
    state = sparse.state_dict()
    assert state["step_density"] > 0
    dense.load_state_dict(state)
    assert dense.step_density == state["step_density"]
    old = {k: v for k, v in state.items() if k != "step_density"}  # written before the sparse step
    dense.load_state_dict(old)
    assert dense.step_density.item() == -1.0


def test_hooks_keep_auto_on_the_dense_step_and_stop_a_forced_one(step_input):
    dense, sparse = _pair(16, 512)
    seen = []
    sparse.hook_sae_acts_post.add_hook(lambda acts, hook: seen.append(acts.shape))
    with pytest.raises(ValueError, match="sparse_step='on' cannot run: hooks are attached to hook_sae_acts_post"):
        sparse.training_forward_pass(step_input(_inputs(64, 16)))
    sparse.sparse_step_policy = SparseStepPolicy("auto", thresholds={"cpu": (1, 1.0)})
    sparse.step_density.fill_(0.01)
    out = sparse.training_forward_pass(step_input(_inputs(64, 16)))
    assert not out.feature_acts.is_sparse and seen == [(64, 512)]


def test_the_option_is_not_part_of_a_runs_settings():
    """A run may resume with the other step: it changes float rounding only, like the device."""
    acts = _inputs(256, 8)
    cfg = TrainConfig(total_samples=256, batch_size=64)
    settings = [run_settings(GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=32, sparse_step=mode)),
                             TensorBatches(acts, 64, seed=0), cfg) for mode in ("on", "off")]
    assert settings[0] == settings[1]
    assert "sparse_step" not in str(settings[0])


def test_the_transposed_product_fallback_gives_the_same_encoder_gradient(monkeypatch, step_input):
    """Devices without a dense x CSR kernel take (CSR^T x dense^T)^T: same values."""
    grads = []
    for fails in (set(), {"cpu"}):
        monkeypatch.setattr(sparse_step, "_DENSE_TIMES_CSR_FAILS", set(fails))
        _, sae = _pair(16, 512)
        sae.training_forward_pass(step_input(_inputs(64, 16))).loss.backward()
        grads.append(sae.W_enc.grad)
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_a_long_run_differs_from_the_dense_run_no_more_than_float_rounding_does():
    """Over hundreds of steps GBA's discrete rule amplifies any rounding difference (a firing count
    off by one moves a bias by a whole step), so no two runs stay bitwise close: the sparse run's
    distance to the dense run is compared with the dense run's distance to itself when its initial
    encoder is perturbed by a few float32 ulps (1e-6 relative, two draws). A perturbation of one ulp
    sometimes moves no firing count at all in 250 steps (the distance then stays ~1e-7, while the
    sparse step's rounding, at every step, always does), hence a few ulps; and the mean absolute
    difference, which one flipped bias does not dominate as it does the maximum."""
    acts = (_inputs(16384, 24, seed=9) * 2).relu()

    def run(mode, perturb=None):
        torch.manual_seed(0)
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=24, d_sae=1024, sparse_step=mode, highest_target=0.03,
                                                  lowest_target=0.001, encoder_init="random",
                                                  decoder_refit=False))  # perturbed below; no refit: not compared
        if perturb is not None:
            with torch.no_grad():
                noise = torch.randn(sae.W_enc.shape, generator=torch.Generator().manual_seed(perturb))
                sae.W_enc.mul_(1 + 1e-6 * noise)
        train_sae(sae, TensorBatches(acts, 256, seed=0), TrainConfig(total_samples=250 * 256, batch_size=256,
                                                                     lr=3e-3, device="cpu"))
        return sae

    dense, sparse = run("off"), run("on")
    perturbed = [run("off", perturb=seed) for seed in (1, 2)]
    assert 0 < sparse.step_density.item() < SPARSE_MAX_DENSITY  # the sparse run was sparse throughout its end

    def distance(a, b):
        return (a.W_dec - b.W_dec).abs().mean().item()

    def nmse(sae):
        x = acts[:2048]
        with torch.no_grad():
            sae.eval()
            return (((sae(x) - x) ** 2).sum(-1).mean() / ((x - x.mean(0)) ** 2).sum(-1).mean()).item()

    rounding = max(distance(dense, p) for p in perturbed)
    assert rounding > 0
    assert distance(dense, sparse) <= 2 * rounding
    assert abs(nmse(sparse) - nmse(dense)) <= 0.05 * nmse(dense)


@pytest.mark.parametrize("options", [{"apply_b_dec_to_input": False}, {"dtype": "float64"}], ids=["no-b_dec-in", "float64"])
def test_other_saelens_settings_keep_the_dense_gradients(step_input, options):
    dense, sparse = _pair(16, 512, **options)
    x = _inputs(128, 16).to(dense.W_enc.dtype)
    for sae in (dense, sparse):
        sae.training_forward_pass(step_input(x)).loss.backward()
    tolerance = 1e-12 if options.get("dtype") == "float64" else 1e-5
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters()):
        if p.grad is not None:
            assert (p.grad - q.grad).abs().max() <= tolerance * p.grad.abs().max(), name


def test_a_forced_sparse_step_refuses_inputs_that_are_not_batch_by_d_in(step_input):
    _, sparse = _pair(16, 512)
    with pytest.raises(ValueError, match=r"sparse_step='on' cannot run: the input has shape \(4, 8, 16\)"):
        sparse.training_forward_pass(step_input(_inputs(32, 16).reshape(4, 8, 16)))
