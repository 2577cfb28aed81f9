"""GBATrainer runs SAELens's Adam with torch's fused kernel: the same updates as SAELens's own
trainer, switched only before the first step."""

from __future__ import annotations

import copy

import torch
from sae_lens import SAETrainer

from gba_lens.data.batches import TensorBatches
from gba_lens.training.train import TrainConfig, _trainer_config
from gba_lens.training.trainer import GBATrainer, use_fused_adam
from training_builders import tiny_gba_sae


def _trainers():
    # one learning rate for every weight, as SAELens's trainer trains them (encoder_lr_scale is GBATrainer's);
    # decoder_refit off: the optimisers' steps are compared, not the refit GBATrainer adds after the last one
    sae = tiny_gba_sae(16, 256, sparse_step="off", encoder_lr_scale=1.0, decoder_refit=False)
    acts = torch.relu(torch.randn(1024, 16, generator=torch.Generator().manual_seed(0))) * 2
    cfg = _trainer_config(TrainConfig(total_samples=8 * 128, batch_size=128, lr=3e-3, device="cpu"))
    ours = GBATrainer(cfg=cfg, sae=sae, data_provider=TensorBatches(acts, 128, seed=0))
    theirs = SAETrainer(cfg=copy.deepcopy(cfg), sae=copy.deepcopy(sae), data_provider=TensorBatches(acts, 128, seed=0))
    return ours, theirs


def test_gba_trainer_adam_is_fused_and_trains_the_saelens_trainer_sae():
    ours, theirs = _trainers()
    assert all(group["fused"] for group in ours.optimizer.param_groups)
    assert not any(group["fused"] for group in theirs.optimizer.param_groups)
    for _ in range(8):
        for trainer in (ours, theirs):
            trainer.step(next(trainer.data_provider))
            trainer.n_training_steps += 1
    for key, value in theirs.sae.state_dict().items():
        assert torch.allclose(ours.sae.state_dict()[key], value, rtol=1e-4, atol=1e-6), key
    assert not torch.equal(ours.sae.W_enc, tiny_gba_sae(16, 256).W_enc)  # it trained


def test_fused_adam_is_not_switched_on_after_the_first_step_or_for_other_optimisers():
    _, theirs = _trainers()
    theirs.step(next(theirs.data_provider))
    assert not use_fused_adam(theirs.optimizer)  # state exists: a running run keeps its kernel
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    assert not use_fused_adam(sgd)
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
    assert use_fused_adam(fresh) and fresh.param_groups[0]["fused"]
