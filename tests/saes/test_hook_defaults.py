"""Options whose default follows the SAE's hook (``input_norm``, ``activation_bias``): each input divided by its
norm and each latent's learned output offset at a residual-stream hook, unit-mean inputs and no offsets anywhere
else; resolved when the config names its hook, else before gba_lens's trainer builds its optimiser, else on the
first batch under SAELens's own trainer."""

from __future__ import annotations

import pytest
import torch
from sae_lens.training.sae_trainer import SAETrainer

from gba_lens.compat import SAEMetadata
from gba_lens.data.batches import SeededBatches
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.training.train import TrainConfig, train_sae

RESIDUAL = ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.3.hook_resid_post", "hook_resid_post",
            "blocks.2.hook_in", "blocks.2.ln2.hook_in", "blocks.2.hook_out"]  # the last three: a TransformerBridge's
OTHER = ["blocks.1.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.0.attn.hook_z", "hook_embed",
         "blocks.1.hook_resid_pre_extra", "blocks.1.mlp.hook_post"]



def _sample(n: int) -> torch.Tensor:  # draws from torch's global RNG, as SeededBatches expects
    return torch.relu(torch.randn(n, 8)) * 3


def _config(hook: str | None = None, **options) -> GBATrainingSAEConfig:
    return GBATrainingSAEConfig(d_in=8, d_sae=24, n_groups=3, metadata=SAEMetadata(hook_name=hook), **options)


@pytest.mark.parametrize("hook", RESIDUAL + OTHER)
def test_a_hook_named_in_the_config_decides_both_options_when_the_sae_is_built(hook):
    residual = hook in RESIDUAL
    cfg = _config(hook)
    assert (cfg.input_norm, cfg.activation_bias) == (("per_token", True) if residual else ("unit_mean", False))
    sae = GBATrainingSAE(cfg)
    assert (sae.b_act is not None) == residual
    assert ("b_act" in dict(sae.named_parameters())) == residual


def test_what_the_user_sets_is_kept_and_what_cannot_apply_or_the_paper_rule_does_not_use_is_not_chosen():
    kept = _config(RESIDUAL[0], input_norm="unit_mean", activation_bias=False)
    assert (kept.input_norm, kept.activation_bias) == ("unit_mean", False)
    asked = _config(OTHER[0], input_norm="per_token", activation_bias=True)
    assert (asked.input_norm, asked.activation_bias) == ("per_token", True)
    scaled = _config(RESIDUAL[0], normalize_activations="expected_average_only_in")  # SAELens scales the inputs
    assert (scaled.input_norm, scaled.activation_bias) == ("unit_mean", True)
    # the paper's rule, a level asked for under the ReLU gate, and the ReLU gate (the paper's theory: its output
    # carries its bias)
    for paper in (_config(RESIDUAL[0], find_l0=False), _config(RESIDUAL[0], target_l0=8.0, gating="relu"),
                  _config(RESIDUAL[0], gating="relu")):
        assert (paper.input_norm, paper.activation_bias) == ("unit_mean", False)
    told = _config(RESIDUAL[0], target_l0=8.0)  # the defaults told their level: as with find_l0
    assert (told.find_l0, told.input_norm, told.activation_bias) == (False, "per_token", True)


@pytest.mark.parametrize("hook", [RESIDUAL[0], OTHER[0], None])
def test_a_hook_named_after_the_sae_is_built_decides_before_the_trainer_builds_its_optimiser(hook):
    """As SAELens's runners do: the SAE is built, then its metadata gets the hook, then the trainer. The
    optimiser holds the offsets where they train and nothing else where they do not."""
    torch.manual_seed(0)
    sae = GBATrainingSAE(_config(decoder_refit=False))
    assert (sae.cfg.input_norm, sae.cfg.activation_bias) == (None, None)
    sae.cfg.metadata.hook_name = hook
    trainer = train_sae(sae, SeededBatches(_sample, 64, seed=0), TrainConfig(total_samples=64 * 12, batch_size=64,
                                                                           device="cpu", lr=1e-2))
    residual = hook in RESIDUAL
    assert (sae.cfg.input_norm, sae.cfg.activation_bias) == (("per_token", True) if residual else ("unit_mean", False))
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in optimised} == {id(p) for p in sae.parameters()}  # no parameter the SAE dropped
    if residual:
        assert sae.b_act.abs().max() > 0  # trained by gradient from zero
        assert "b_act" in sae.state_dict()
    else:
        assert sae.b_act is None and "b_act" not in sae.state_dict()


@pytest.mark.parametrize("hook, options", [(RESIDUAL[0], {}), (OTHER[0], {}), (OTHER[0], {"input_norm": "none"})])
def test_under_saelens_own_trainer_the_first_step_decides(hook, options, tmp_path):
    """The first step settles them, also where the inputs are not scaled (no first-batch scaling runs)."""
    from gba_lens.training.train import _trainer_config

    torch.manual_seed(0)
    sae = GBATrainingSAE(_config(decoder_refit=False, **options))
    sae.cfg.metadata.hook_name = hook
    trainer = SAETrainer(cfg=_trainer_config(TrainConfig(total_samples=64 * 6, batch_size=64, device="cpu")),
                         sae=sae, data_provider=SeededBatches(_sample, 64, seed=0))
    assert sae.cfg.activation_bias is None  # SAELens's optimiser holds the offsets the run may drop
    trainer.fit()
    residual = hook in RESIDUAL
    assert sae.cfg.input_norm == ("per_token" if residual else options.get("input_norm", "unit_mean"))
    assert (sae.b_act is not None) == residual
    with torch.no_grad():  # the saved SAE loads as it trained
        sae.save_inference_model(tmp_path)
        from sae_lens import SAE

        plain = SAE.load_from_disk(str(tmp_path))
        x = _sample(32)
        sae.eval()
        assert plain.cfg.normalize_activations == ("constant_norm_rescale" if residual else "none")
        assert torch.allclose(plain.decode(plain.encode(x)), sae.decode(sae.encode(x)), atol=1e-4)
