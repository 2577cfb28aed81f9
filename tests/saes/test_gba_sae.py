"""The GBA SAE as a SAELens architecture: registry, training step, export to plain SAELens."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from sae_lens.registry import get_sae_training_class
from safetensors.torch import load_file, save_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import gba_lens  # noqa: F401  (registers "gba")
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.training.data import SeededBatches
from gba_lens.training.train import TrainConfig, train_sae


def test_registered_with_paper_defaults():
    cls, cfg_cls = get_sae_training_class("gba")
    assert cls is GBATrainingSAE and cfg_cls is GBATrainingSAEConfig
    cfg = cfg_cls(d_in=8, d_sae=40)
    assert (cfg.n_groups, cfg.highest_target, cfg.lowest_target) == (10, 0.1, 1e-3)
    assert (cfg.gamma_minus, cfg.gamma_plus, cfg.gating) == (0.01, 0.01, "jumprelu")
    with pytest.raises(ValueError, match="n_groups"):
        cfg_cls(d_in=8, d_sae=4, n_groups=10)


def test_training_step_bias_moves_only_by_the_rule(step_input):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=20, n_groups=2))
    x = torch.randn(64, 8) * 3 + 1
    out = sae.training_forward_pass(step_input(x))
    out.loss.backward()
    assert sae.b_enc.grad is None  # no gradient reaches the biases
    assert sae.W_enc.grad is not None and sae.W_dec.grad is not None
    # The step's pre-activations are y = u + b with b = 0 at the start: every neuron with a
    # positive y in over half the batch is over its target and moved down by 0.01 * peak.
    y = out.hidden_pre.detach()
    freq, peak = (y > 0).float().mean(0), y.max(0).values.clamp(min=0)
    target = torch.tensor([0.1] * 10 + [1e-3] * 10)
    expected = torch.where(freq > target, (-0.01 * peak).clamp(min=-1), torch.zeros(20))
    assert torch.allclose(sae.b_enc, expected, atol=1e-6)
    assert (sae.b_enc <= 0).all() and (sae.b_enc >= -1).all()


def test_logging_step_reports_each_groups_frequency_target_and_bias(step_input):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=20, n_groups=2, find_l0=False))  # fixed targets
    out = sae.training_forward_pass(step_input(torch.randn(64, 8) * 3 + 1))
    fired = (out.feature_acts != 0).float().mean(0)
    for k, members in enumerate((slice(0, 10), slice(10, 20))):
        assert out.metrics[f"gba_groups/group_{k}_frequency"] == pytest.approx(float(fired[members].mean()))
        assert out.metrics[f"gba_groups/group_{k}_target"] == pytest.approx((0.1, 1e-3)[k])
        # the bias after this step's update, which lowered the over-active neurons of both groups
        assert out.metrics[f"gba_groups/group_{k}_bias"] == pytest.approx(float(sae.b_enc[members].mean()))
        assert out.metrics[f"gba_groups/group_{k}_bias"] < 0


def test_training_clips_the_first_steps_large_gradients():
    """GBA relies on the trainer's gradient-norm clipping: at bias 0 every neuron fires, the
    first steps' gradients are large, and unclipped they inflate Adam's second moment until
    training stalls. Our harness (SAELens's step) must clip."""
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=10, d_sae=40, n_groups=4))
    raw_sq: list[torch.Tensor] = []  # squared norms of the gradients as backward produces them
    for p in sae.parameters():
        if p.requires_grad:
            p.register_hook(lambda g: raw_sq.append(g.detach().pow(2).sum()))
    applied: list[float] = []  # the gradient norm the optimiser step sees

    def before_step(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        applied.append(torch.nn.utils.get_total_norm(grads).item())

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        train_sae(sae, SeededBatches(lambda n: torch.relu(torch.randn(n, 10)) * 30, 64, seed=0),
                  TrainConfig(total_samples=64, batch_size=64, lr=1e-2))
    finally:
        handle.remove()
    assert len(applied) == 1
    assert torch.stack(raw_sq).sum().sqrt().item() > 10  # the step's gradient was large ...
    assert applied[0] <= 1.0 + 1e-4  # ... and what Adam received was clipped to norm 1


@pytest.mark.parametrize("unit_norm", ["auto", "encoder", "decoder"])
def test_first_batch_sets_unit_mean_norm_and_directions_stay_on_sphere(step_input, unit_norm):
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=20, unit_norm=unit_norm, encoder_init="random"))
    with torch.no_grad():  # knock both sides off the sphere
        sae.W_enc.mul_(3)
        sae.W_dec.mul_(0.5)
    x = torch.randn(256, 8) * 7 + 5
    sae.training_forward_pass(step_input(x))
    centred = sae.input_scale * x - sae.b_dec
    assert centred.norm(dim=-1).mean().item() == pytest.approx(1.0, rel=1e-4)
    # Default: the paper's unit-norm w_m is the encoder direction; the decoder row is free.
    side = "decoder" if unit_norm == "decoder" else "encoder"
    assert sae.cfg.constrained_side == side
    norms = sae.W_dec.norm(dim=1) if side == "decoder" else sae.W_enc.norm(dim=0)
    other = sae.W_enc.norm(dim=0) if side == "decoder" else sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones(20), atol=1e-5)
    assert not torch.allclose(other, torch.ones(20), atol=1e-2)


def test_without_centring_b_pre_is_zero_and_raw_inputs_get_unit_mean_norm(step_input):
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=20, centre_inputs=False))
    x = torch.randn(256, 8) * 7 + 5
    sae.training_forward_pass(step_input(x))
    assert torch.count_nonzero(sae.b_dec) == 0
    assert (sae.input_scale * x).norm(dim=-1).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_relu_gating_constrains_the_encoder(step_input):
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=20, gating="relu"))
    assert sae.cfg.constrained_side == "encoder"
    with torch.no_grad():
        sae.W_enc.mul_(5)
    sae.training_forward_pass(step_input(torch.randn(32, 8)))
    assert torch.allclose(sae.W_enc.norm(dim=0), torch.ones(20), atol=1e-5)


def test_nan_first_batch_is_a_clear_error(step_input):
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=4, d_sae=16))
    x = torch.randn(16, 4)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sae.training_forward_pass(step_input(x))


PLAIN_SAELENS = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import load_file, save_file
    from sae_lens import SAE
    for path, io in zip(sys.argv[1::2], sys.argv[2::2]):
        sae = SAE.load_from_disk(path)
        x = load_file(io + "/x.safetensors")["x"]
        acts = sae.encode(x)
        save_file({"acts": acts.contiguous(), "recons": sae.decode(acts).contiguous()}, io + "/out.safetensors")
        gba_loaded = any(m.startswith("gba_lens") for m in sys.modules)
        print(json.dumps({"class": type(sae).__name__, "arch": sae.cfg.architecture(), "gba_lens_imported": gba_loaded,
                          "details": sae.cfg.metadata.training_architecture_details,
                          "normalize": sae.cfg.normalize_activations}))
    """
)

EXPORT_CASES = [
    ("jumprelu", False, "unit_mean", False, "JumpReLUSAE"), ("jumprelu", False, "unit_mean", True, "JumpReLUSAE"),
    ("jumprelu", True, "unit_mean", False, "JumpReLUSAE"), ("relu", False, "unit_mean", True, "StandardSAE"),
    ("jumprelu", True, "per_token", True, "JumpReLUSAE")]
"""gating, activation_bias, input_norm, decoder_refit and the plain SAELens class each export loads as."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each EXPORT_CASES SAE trained and saved, then loaded by one fresh interpreter that never imports gba_lens
    (one for all cases: its start-up is most of the time). Per case: (SAE, inputs, folder, what the loader said)."""
    root = tmp_path_factory.mktemp("export")
    trained, argv = [], []
    for i, (gating, activation_bias, input_norm, decoder_refit, _) in enumerate(EXPORT_CASES):
        torch.manual_seed(0)
        sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=12, d_sae=48, gating=gating, n_groups=4,
                                                  activation_bias=activation_bias, input_norm=input_norm,
                                                  decoder_refit=decoder_refit))
        data = SeededBatches(lambda n: torch.relu(torch.randn(n, 12)) * 4 + 2, 128)
        train_sae(sae, data, TrainConfig(total_samples=128 * 30, batch_size=128, lr=1e-2))
        sae.eval()
        folder = root / f"case{i}"
        sae.save_inference_model(folder / "sae")
        x = (torch.relu(torch.randn(200, 12)) * 4 + 2) * torch.exp(torch.randn(200, 1) * 0.5)  # inputs of many scales
        (folder / "io").mkdir()
        save_file({"x": x}, str(folder / "io" / "x.safetensors"))
        trained.append((sae, x, folder))
        argv += [str(folder / "sae"), str(folder / "io")]
    script = root / "load.py"
    script.write_text(PLAIN_SAELENS)
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(EXPORT_CASES):]]
    return {case: (*run, info) for case, run, info in zip(EXPORT_CASES, trained, said)}


@pytest.mark.parametrize("gating, activation_bias, input_norm, decoder_refit, inference_class", EXPORT_CASES)
def test_export_loads_in_plain_saelens_with_equal_outputs(exported, gating, activation_bias, input_norm, decoder_refit,
                                                          inference_class):
    sae, x, folder, info = exported[(gating, activation_bias, input_norm, decoder_refit, inference_class)]
    assert sae.b_enc.min() < 0  # the biases actually moved
    # and the offsets: trained (activation_bias) or fitted after the last step (decoder_refit, JumpReLU gate)
    offsets = activation_bias or (decoder_refit and gating == "jumprelu")
    assert offsets == (sae.b_act is not None and sae.b_act.abs().max() > 0.01)
    assert info["class"] == inference_class and not info["gba_lens_imported"]
    assert info["details"]["n_groups"] == 4 and info["details"]["gating"] == gating  # hyperparameters travel
    assert info["normalize"] == ("constant_norm_rescale" if input_norm == "per_token" else "none")

    out = load_file(str(folder / "io" / "out.safetensors"))
    with torch.no_grad():
        acts = sae.encode(x)
        recons = sae.decode(acts)
    assert (acts != 0).float().mean() < 0.9  # the gate is doing something
    assert torch.allclose(out["acts"], acts, atol=1e-5, rtol=1e-5)
    assert torch.allclose(out["recons"], recons, atol=1e-4, rtol=1e-5)
    # and in memory, the same as to_inference_sae()
    inference = sae.to_inference_sae()
    assert type(inference).__name__ == inference_class
    assert torch.allclose(inference.encode(x), acts, atol=1e-5)


def test_a_save_model_folder_loads_through_saelens_and_trains_on(tmp_path):
    """A folder ``save_model`` writes (a SAELens trainer's checkpoint of a GBA run) loads with SAELens's
    ``TrainingSAE.load_from_disk`` (what its runner's ``from_pretrained_path`` calls), which builds the SAE on
    the "meta" device: every buffer ends on the CPU, the saved state equal, and training goes on through
    ``find_l0``'s checks, whose sums are not saved. ``SAE.load_from_disk`` reads it too, with equal outputs."""
    from sae_lens import SAE, TrainingSAE

    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=12, d_sae=48, n_groups=4, decoder_refit=False))
    assert sae.cfg.find_l0  # the defaults: find_l0, whose check sums are not saved
    data = SeededBatches(lambda n: torch.relu(torch.randn(n, 12)) * 4 + 2, 128)
    train_sae(sae, data, TrainConfig(total_samples=128 * 25, batch_size=128, lr=1e-2))
    unsaved = {name for name, _ in sae.named_buffers()} - set(sae.state_dict())
    assert unsaved  # what the loader has to make again
    sae.save_model(str(tmp_path / "ckpt"))

    loaded = TrainingSAE.load_from_disk(tmp_path / "ckpt")
    assert type(loaded) is GBATrainingSAE
    assert [name for name, b in loaded.named_buffers() if b.device.type != "cpu"] == []
    saved = sae.state_dict()
    assert saved.keys() == loaded.state_dict().keys()
    assert all(saved[k].dtype == v.dtype and torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    scale = float(loaded.bias_adaptation.l0_control.log_scale)
    train_sae(loaded, data, TrainConfig(total_samples=128 * 25, batch_size=128, lr=1e-2))
    assert float(loaded.bias_adaptation.l0_control.log_scale) != scale  # find_l0's checks read and moved the scale
    assert loaded.bias_adaptation.coactivation.last_ratio is not None

    plain = SAE.load_from_disk(tmp_path / "ckpt")
    x = torch.relu(torch.randn(64, 12)) * 4 + 2
    sae.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(plain.decode(plain.encode(x)), sae.decode(sae.encode(x)))
